"""The example plugin is a separate package: its own tests run only where it is installed."""

collect_ignore = ["ioc-example-plugin"]
