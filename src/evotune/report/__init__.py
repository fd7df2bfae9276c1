"""Reports: figures (`plots`), tables (`tables`), HTML (`html`, `render`) and the comparison (`compare`).

Nothing is imported here, so the CLI can use the light modules without loading every analysis.
"""
