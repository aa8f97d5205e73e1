"""The only code that changes the system: files, sysctls, firewall."""
