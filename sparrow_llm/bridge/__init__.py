"""The JVM boundary: `client` (the only module that imports py4j) and `host` (the launcher's process)."""
