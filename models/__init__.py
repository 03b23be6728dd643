"""The repository layer: tables, engines and every SQL statement regionmesh runs."""
