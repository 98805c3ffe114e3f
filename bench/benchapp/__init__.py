"""The benchmarks' own app: a Comment model (the badge page), the no-op task, the views."""
