"""Software-defined assets of the audit, each a thin adapter over `divcoef_assets.pipeline`."""
