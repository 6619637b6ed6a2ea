"""Reporting: tables, figures and the views of finished runs."""
