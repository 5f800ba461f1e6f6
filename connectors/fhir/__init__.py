"""Hospitals over HL7 FHIR R4: the `fhir` connector and its simulated FHIR server."""
