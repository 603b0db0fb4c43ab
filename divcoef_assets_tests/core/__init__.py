"""Tests for divcoef_assets.core."""
