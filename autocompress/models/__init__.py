"""autocompress.models"""
