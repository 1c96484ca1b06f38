"""Examples of vaebias used from outside the package (docs: "Your own data and models")."""
