"""autocompress.pruning"""
