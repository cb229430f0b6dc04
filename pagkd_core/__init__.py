"""pagkd_core package."""
