"""The rules stage of the insights step (issue 20): `extract_insights(report, context)`."""
