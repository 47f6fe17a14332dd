"""Parlor's benchmark (issue 6): `python -m bench`. See bench/README.md."""
