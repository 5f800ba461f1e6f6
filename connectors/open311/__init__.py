"""Citizen feedback (phản ánh kiến nghị) over Open311 GeoReport v2: connector and simulator."""
