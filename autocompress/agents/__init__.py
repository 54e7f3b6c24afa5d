"""autocompress.agents"""
