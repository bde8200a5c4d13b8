"""Pure definitions and transformations: reports, templates, codes, HL7v2 and FHIR mapping.

Nothing here opens a socket, a database or a model.
"""
