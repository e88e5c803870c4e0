"""What operators touch: the command line, the HTTP status server, metrics and alerts."""
