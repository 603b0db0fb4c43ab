"""Tests for divcoef_assets."""
