"""Helpers shared by the tests: the API's routes however FastAPI nests them (`routes`), polling
until a condition holds (`waiting`). The `store` fixture (SQLite and PostgreSQL) is in
tests/conftest.py over `tests.stores`; the fake EHR listeners are `tests.fhir_server` (FHIR) and
`tests.oru_receiver` (HL7v2 ORU over MLLP)."""
