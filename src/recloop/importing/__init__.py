"""``recloop import``: loading history files (``rows``) and running them through
ingestion (``runner``)."""
