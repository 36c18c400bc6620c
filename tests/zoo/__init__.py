"""A zoo of ordinary NumPyro models (the kinds in NumPyro's own examples) for the "model x tool" tests."""
