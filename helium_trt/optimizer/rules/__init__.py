"""optimizer/rules."""
