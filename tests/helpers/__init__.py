"""Helpers shared by the tests: the API's routes however FastAPI nests them (`routes`), polling
until a condition holds (`waiting`), the fake EHR listeners: the project's test FHIR EHR
(`fhir_server`), an ORU receiver over MLLP (`oru_receiver`) and Medplum's FHIR router
(`ehr_engine`, serving `medplum_ehr.mjs`). The `store` fixture (SQLite and PostgreSQL) is in
tests/conftest.py over `tests.stores`."""
