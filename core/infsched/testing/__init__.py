"""What plugin authors test their plugins with (pytest is needed to import these modules)."""
