"""Tests that each reproduce an attack on the bridge and check it fails."""
