"""Retail loyalty-program microservice."""
