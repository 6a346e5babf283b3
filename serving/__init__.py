"""BentoML prediction service for the champion CNN."""
