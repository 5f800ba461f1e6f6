"""An example third-party IOC connector package: published governance indices (PAR INDEX…)."""

from ioc_example_plugin.connector import ParIndexConnector

__all__ = ["ParIndexConnector"]
