"""Report-level insights (issue 20): follow-up recommendations, critical results, their
communication and RADS categories; the model (`model`), the shipped critical-findings list
(`critical_list`, `critical.yaml`) and their FHIR resources (`fhir`)."""
