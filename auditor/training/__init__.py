"""Training and evaluation of the fracture classifier (``tlaudit train`` / ``tlaudit evaluate``)."""
