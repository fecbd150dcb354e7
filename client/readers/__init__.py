"""A hospital's file readers: tables, images and sequences, each held to the data contract."""

from fedcare.client.readers.site_data import read_site_data

__all__ = ["read_site_data"]
