"""Model registry (one manifest per model version) and model packaging."""
