"""Which bases make a region accessible: ISM and gradient contributions, their files and plots."""
