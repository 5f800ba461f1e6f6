"""Incidents: rules over KPI values, records and connector health; their lifecycle and evidence."""
