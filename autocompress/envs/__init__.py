"""autocompress.envs"""
