"""Cost evaluators: what an architecture of an NNI model space costs."""
