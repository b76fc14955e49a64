"""What every controller shares: the pass loop, lease holding, fault points."""
