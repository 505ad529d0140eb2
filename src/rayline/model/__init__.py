"""The model interface serving, batch and evaluation share (artifact), the network (torch), the
booster (XGBoost), raw outputs to predictions (outputs): import the module you need. Nothing is
imported here, so serving a booster never imports torch."""
