"""autocompress.measure"""
