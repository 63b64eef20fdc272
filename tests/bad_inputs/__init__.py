"""Bad inputs and faults, one test per case of the catalogue (issue 16)."""
