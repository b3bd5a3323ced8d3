"""End-to-end workflows built on the task functions (the demo)."""
