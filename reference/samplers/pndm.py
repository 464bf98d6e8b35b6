"""(being written)"""

INFO = []
