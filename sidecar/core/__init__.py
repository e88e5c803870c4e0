"""Pure decisions: the model, validation, planning, rate limits, nginx rendering and parsing. Imports nothing else of the package."""
