"""fablab-monitor server: ingest, domain services, REST API and dashboards."""

__version__ = "0.1.0"
