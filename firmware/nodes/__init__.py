"""Node applications: one module per use case, each with its payload format and sensors."""
