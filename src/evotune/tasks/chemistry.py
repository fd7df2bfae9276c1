"""Chemistry: 4-way multiple choice on chemistry facts written here as data (SciKnowEval-style).

Questions are generated from fact tables (elements: symbol, name, atomic number, group, period,
state at 25 °C; element families; common compounds and their formulas). Distractors are drawn from
the same table with a seeded RNG, so every item has exactly one correct option. Only facts that do
not depend on convention are used: near-room-temperature melters (Ga, Rb, Cs, Fr) have no state,
f-block elements have no group, and "metalloid" is not a category.

Answer format (strict, no lenient fallback): the completion must contain `\\boxed{X}` with X one
upper-case letter of the options. Every box in the completion must hold that same letter; a
lower-case letter, `\\boxed{(B)}`, `\\boxed{\\text{B}}`, a bare "B" or "Answer: B", or two different
boxed letters earn nothing. Reward = 0.1·format + answer (as countdown): format = a valid single
boxed letter, answer = it is the right one.

Train/eval disjointness is on the question (its stem and correct answer), not the rendered prompt,
so the same question with other distractors can never sit in both splits.
"""

from __future__ import annotations

import random
import re
from typing import Any

from evotune.tasks.answers import SuiteTask, single_choice
from evotune.tasks.base import Example, Reward, disjoint_split, register_task, stable_int

LETTERS = "ABCD"
# The format is spelled out with all four letters (no placeholder letter a small model might copy, and
# no single example letter that would bias the choice).
_SYSTEM = (
    "Answer the multiple-choice chemistry question with the letter of the correct option, written as "
    "\\boxed{A}, \\boxed{B}, \\boxed{C} or \\boxed{D}. Give only one letter."
)
_INSTRUCTION = "Answer with \\boxed{A}, \\boxed{B}, \\boxed{C} or \\boxed{D}."

# (atomic number, symbol, name, group or None for f-block, period, state at 25 °C and 1 atm or None)
ELEMENTS: tuple[tuple[int, str, str, int | None, int, str | None], ...] = (
    (1, "H", "Hydrogen", 1, 1, "gas"), (2, "He", "Helium", 18, 1, "gas"),
    (3, "Li", "Lithium", 1, 2, "solid"), (4, "Be", "Beryllium", 2, 2, "solid"),
    (5, "B", "Boron", 13, 2, "solid"), (6, "C", "Carbon", 14, 2, "solid"),
    (7, "N", "Nitrogen", 15, 2, "gas"), (8, "O", "Oxygen", 16, 2, "gas"),
    (9, "F", "Fluorine", 17, 2, "gas"), (10, "Ne", "Neon", 18, 2, "gas"),
    (11, "Na", "Sodium", 1, 3, "solid"), (12, "Mg", "Magnesium", 2, 3, "solid"),
    (13, "Al", "Aluminium", 13, 3, "solid"), (14, "Si", "Silicon", 14, 3, "solid"),
    (15, "P", "Phosphorus", 15, 3, "solid"), (16, "S", "Sulfur", 16, 3, "solid"),
    (17, "Cl", "Chlorine", 17, 3, "gas"), (18, "Ar", "Argon", 18, 3, "gas"),
    (19, "K", "Potassium", 1, 4, "solid"), (20, "Ca", "Calcium", 2, 4, "solid"),
    (21, "Sc", "Scandium", 3, 4, "solid"), (22, "Ti", "Titanium", 4, 4, "solid"),
    (23, "V", "Vanadium", 5, 4, "solid"), (24, "Cr", "Chromium", 6, 4, "solid"),
    (25, "Mn", "Manganese", 7, 4, "solid"), (26, "Fe", "Iron", 8, 4, "solid"),
    (27, "Co", "Cobalt", 9, 4, "solid"), (28, "Ni", "Nickel", 10, 4, "solid"),
    (29, "Cu", "Copper", 11, 4, "solid"), (30, "Zn", "Zinc", 12, 4, "solid"),
    (31, "Ga", "Gallium", 13, 4, None), (32, "Ge", "Germanium", 14, 4, "solid"),
    (33, "As", "Arsenic", 15, 4, "solid"), (34, "Se", "Selenium", 16, 4, "solid"),
    (35, "Br", "Bromine", 17, 4, "liquid"), (36, "Kr", "Krypton", 18, 4, "gas"),
    (37, "Rb", "Rubidium", 1, 5, None), (38, "Sr", "Strontium", 2, 5, "solid"),
    (39, "Y", "Yttrium", 3, 5, "solid"), (40, "Zr", "Zirconium", 4, 5, "solid"),
    (41, "Nb", "Niobium", 5, 5, "solid"), (42, "Mo", "Molybdenum", 6, 5, "solid"),
    (43, "Tc", "Technetium", 7, 5, "solid"), (44, "Ru", "Ruthenium", 8, 5, "solid"),
    (45, "Rh", "Rhodium", 9, 5, "solid"), (46, "Pd", "Palladium", 10, 5, "solid"),
    (47, "Ag", "Silver", 11, 5, "solid"), (48, "Cd", "Cadmium", 12, 5, "solid"),
    (49, "In", "Indium", 13, 5, "solid"), (50, "Sn", "Tin", 14, 5, "solid"),
    (51, "Sb", "Antimony", 15, 5, "solid"), (52, "Te", "Tellurium", 16, 5, "solid"),
    (53, "I", "Iodine", 17, 5, "solid"), (54, "Xe", "Xenon", 18, 5, "gas"),
    (55, "Cs", "Caesium", 1, 6, None), (56, "Ba", "Barium", 2, 6, "solid"),
    (74, "W", "Tungsten", 6, 6, "solid"), (78, "Pt", "Platinum", 10, 6, "solid"),
    (79, "Au", "Gold", 11, 6, "solid"), (80, "Hg", "Mercury", 12, 6, "liquid"),
    (82, "Pb", "Lead", 14, 6, "solid"), (83, "Bi", "Bismuth", 15, 6, "solid"),
    (86, "Rn", "Radon", 18, 6, "gas"), (87, "Fr", "Francium", 1, 7, None),
    (88, "Ra", "Radium", 2, 7, "solid"), (92, "U", "Uranium", None, 7, "solid"),
)

# family -> (question phrase, members by symbol); distractors are any element outside the family.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "noble_gas": ("is a noble gas", ("He", "Ne", "Ar", "Kr", "Xe", "Rn")),
    "halogen": ("is a halogen", ("F", "Cl", "Br", "I")),
    "alkali": ("is an alkali metal", ("Li", "Na", "K", "Rb", "Cs", "Fr")),
    "alkaline_earth": ("is an alkaline earth metal", ("Be", "Mg", "Ca", "Sr", "Ba", "Ra")),
    "diatomic": ("exists as diatomic molecules (X2) at room temperature", ("H", "N", "O", "F", "Cl", "Br", "I")),
}

# (name, formula); formulas in plain ASCII, parentheses for polyatomic groups.
COMPOUNDS: tuple[tuple[str, str], ...] = (
    ("water", "H2O"), ("carbon dioxide", "CO2"), ("carbon monoxide", "CO"), ("methane", "CH4"),
    ("ethane", "C2H6"), ("propane", "C3H8"), ("butane", "C4H10"), ("ethene", "C2H4"), ("ethyne", "C2H2"),
    ("ammonia", "NH3"), ("sodium chloride", "NaCl"), ("potassium chloride", "KCl"),
    ("calcium chloride", "CaCl2"), ("magnesium chloride", "MgCl2"), ("hydrogen chloride", "HCl"),
    ("sulfuric acid", "H2SO4"), ("nitric acid", "HNO3"), ("phosphoric acid", "H3PO4"),
    ("calcium carbonate", "CaCO3"), ("sodium carbonate", "Na2CO3"), ("sodium bicarbonate", "NaHCO3"),
    ("potassium carbonate", "K2CO3"), ("sodium hydroxide", "NaOH"), ("potassium hydroxide", "KOH"),
    ("lithium hydroxide", "LiOH"), ("calcium hydroxide", "Ca(OH)2"), ("magnesium hydroxide", "Mg(OH)2"),
    ("hydrogen peroxide", "H2O2"), ("ozone", "O3"), ("ethanol", "C2H5OH"), ("methanol", "CH3OH"),
    ("acetic acid", "CH3COOH"), ("glucose", "C6H12O6"), ("sucrose", "C12H22O11"), ("benzene", "C6H6"),
    ("sulfur dioxide", "SO2"), ("sulfur trioxide", "SO3"), ("nitrogen dioxide", "NO2"),
    ("nitrous oxide", "N2O"), ("magnesium oxide", "MgO"), ("calcium oxide", "CaO"),
    ("iron(III) oxide", "Fe2O3"), ("aluminium oxide", "Al2O3"), ("silicon dioxide", "SiO2"),
    ("zinc oxide", "ZnO"), ("copper(II) oxide", "CuO"), ("hydrogen sulfide", "H2S"),
    ("silver nitrate", "AgNO3"), ("silver chloride", "AgCl"), ("copper(II) sulfate", "CuSO4"),
    ("iron(II) sulfate", "FeSO4"), ("ammonium chloride", "NH4Cl"), ("ammonium nitrate", "NH4NO3"),
    ("ammonium sulfate", "(NH4)2SO4"), ("potassium nitrate", "KNO3"), ("sodium nitrate", "NaNO3"),
    ("sodium sulfate", "Na2SO4"), ("barium sulfate", "BaSO4"), ("calcium sulfate", "CaSO4"),
    ("magnesium sulfate", "MgSO4"), ("lithium fluoride", "LiF"), ("sodium fluoride", "NaF"),
    ("hydrogen fluoride", "HF"), ("sodium bromide", "NaBr"), ("potassium iodide", "KI"),
    ("potassium permanganate", "KMnO4"), ("aluminium chloride", "AlCl3"), ("lead(II) nitrate", "Pb(NO3)2"),
    ("calcium phosphate", "Ca3(PO4)2"), ("carbon tetrachloride", "CCl4"), ("chloroform", "CHCl3"),
    ("boron trifluoride", "BF3"), ("phosphorus pentachloride", "PCl5"), ("sulfur hexafluoride", "SF6"),
    ("silicon carbide", "SiC"),
)

_TOKEN_RE = re.compile(r"([A-Z][a-z]?|\(|\)|\d+)")


def atom_counts(formula: str) -> dict[str, int]:
    """Atoms per element in a formula with parenthesised groups: Ca3(PO4)2 -> {Ca: 3, P: 2, O: 8}."""
    tokens = _TOKEN_RE.findall(formula)
    if "".join(tokens) != formula:
        raise ValueError(f"cannot parse formula {formula!r}")
    stack: list[dict[str, int]] = [{}]
    i = 0
    while i < len(tokens):
        t = tokens[i]
        i += 1
        if t == "(":
            stack.append({})
            continue
        if t.isdigit():
            raise ValueError(f"misplaced number in formula {formula!r}")
        mult = 1
        if i < len(tokens) and tokens[i].isdigit():
            mult = int(tokens[i])
            i += 1
        if t == ")":
            if len(stack) == 1:
                raise ValueError(f"unbalanced parentheses in {formula!r}")
            group = stack.pop()
            for el, c in group.items():
                stack[-1][el] = stack[-1].get(el, 0) + c * mult
        else:
            stack[-1][t] = stack[-1].get(t, 0) + mult
    if len(stack) != 1:
        raise ValueError(f"unbalanced parentheses in {formula!r}")
    return stack[0]


_BY_SYMBOL = {e[1]: e for e in ELEMENTS}

Item = tuple[str, str, str, list[str]]  # key, question, correct option text, distractor pool


def _items() -> list[Item]:
    """Every question the tables support, each once, with the pool its distractors come from."""
    out: list[Item] = []
    names = [e[2] for e in ELEMENTS]
    symbols = [e[1] for e in ELEMENTS]
    for z, sym, name, group, period, _state in ELEMENTS:
        near_z = [str(e[0]) for e in ELEMENTS if e[0] != z and abs(e[0] - z) <= 12]
        others = [n for n in names if n != name]
        other_syms = [s for s in symbols if s != sym]
        out += [
            (f"name:{sym}", f"Which element has the chemical symbol {sym}?", name, others),
            (f"symbol:{name}", f"What is the chemical symbol of {name.lower()}?", sym, other_syms),
            (f"z:{name}", f"What is the atomic number of {name.lower()}?", str(z), near_z),
            (f"of_z:{z}", f"Which element has atomic number {z}?", name, others),
            (f"sym_of_z:{z}", f"What is the symbol of the element with atomic number {z}?", sym, other_syms),
            (f"protons:{name}", f"How many protons are in the nucleus of an atom of {name.lower()}?", str(z), near_z),
            (f"electrons:{sym}", f"How many electrons does a neutral atom of {sym} have?", str(z), near_z),
            (f"period:{name}", f"In which period of the periodic table is {name.lower()}?", f"Period {period}",
             [f"Period {p}" for p in range(1, 8) if p != period]),
        ]
        if group is not None:
            out.append((f"group:{name}", f"In which group of the periodic table (1-18) is {name.lower()}?",
                        f"Group {group}", [f"Group {g}" for g in range(1, 19) if g != group]))
            out.append((f"at:{group}:{period}", f"Which element is in group {group} and period {period}?", name,
                        [e[2] for e in ELEMENTS if e[3] is not None and (e[3], e[4]) != (group, period)]))
    for fam, (phrase, members) in FAMILIES.items():
        outside = [e[2] for e in ELEMENTS if e[1] not in members]
        for sym in members:
            out.append((f"family:{fam}:{sym}", f"Which of these elements {phrase}?", _BY_SYMBOL[sym][2], outside))
    for state in ("gas", "liquid"):
        solids = [e[2] for e in ELEMENTS if e[5] == "solid"]
        for e in ELEMENTS:
            if e[5] == state:
                out.append((f"state:{e[1]}", f"Which of these elements is a {state} at 25 °C and 1 atm?", e[2], solids))
    formulas = [f for _, f in COMPOUNDS]
    cnames = [n for n, _ in COMPOUNDS]
    for cname, formula in COMPOUNDS:
        counts = atom_counts(formula)
        out.append((f"formula:{cname}", f"What is the chemical formula of {cname}?", formula,
                    [f for f in formulas if f != formula]))
        out.append((f"cname:{formula}", f"Which compound has the formula {formula}?", cname,
                    [n for n in cnames if n != cname]))
        total = sum(counts.values())
        out.append((f"total:{formula}", f"How many atoms in total are in one formula unit of {formula}?", str(total),
                    _near(total)))
        for sym, c in counts.items():
            el = _BY_SYMBOL[sym][2].lower()
            out.append((f"count:{formula}:{sym}", f"How many {el} atoms are in one formula unit of {formula}?",
                        str(c), _near(c)))
    return out


def _near(n: int) -> list[str]:
    """Numeric distractors close to n (positive, distinct from it)."""
    return [str(k) for k in range(max(1, n - 4), n + 5) if k != n]


def make_prompt(question: str, options: list[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines) + "\n" + _INSTRUCTION


def letter_answer(answer: Any) -> str:
    """A local row's answer as one upper-case letter ("b", " B " -> "B"); ValueError otherwise."""
    s = str(answer).strip().upper()
    if len(s) != 1 or not "A" <= s <= "Z":
        raise ValueError(f"answer {answer!r} is not a single option letter")
    return s


@register_task("chemistry")
class Chemistry(SuiteTask):
    """4-way multiple choice from the fact tables above; options: data, eval_data."""

    default_n_train = 300
    default_n_eval = 500
    default_max_new_tokens = 64

    system = _SYSTEM
    convert_answer = staticmethod(letter_answer)

    def generate_splits(self) -> tuple[list[Example], list[Example]]:
        items = []
        for key, question, correct, pool in _items():
            rng = random.Random(stable_int("chemistry", self.seed, key))
            options = rng.sample(sorted(set(pool) - {correct}), 3) + [correct]
            rng.shuffle(options)
            letter = LETTERS[options.index(correct)]
            items.append(Example(id=f"chemistry-{stable_int(key) % 10**8:08d}", prompt=make_prompt(question, options),
                                 answer=letter, meta={"key": key, "kind": key.split(":")[0], "letters": LETTERS}))
        return disjoint_split(items, self.n_train, self.n_eval, self.seed, key=lambda e: e.meta["key"])

    def reward(self, completion: str, example: Example) -> Reward:
        letters = example.meta.get("letters", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        got = single_choice(completion, lambda c: c.strip() if len(c.strip()) == 1 and c.strip() in letters else None)
        fmt = 0.1 if got is not None else 0.0
        ok = got == example.answer
        ans = 1.0 if ok else 0.0
        return Reward(score=fmt + ans, components={"format": fmt, "answer": ans}, correct=ok)
