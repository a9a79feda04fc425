"""Reference tables for the synthetic school: names, codes, places, curriculum.

Kept as data so the generators stay short.  Weights are rough shares of England's school
population; they aim at plausible data, not statistics.  Phone numbers and email domains
come from ranges reserved for fiction (Ofcom drama numbers, RFC 2606 `example.*`), so a
partner app fed synthetic data can never text or email a real person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

Weighted = tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Heritage:
    """Names, languages and religions that go together in one family."""

    female: tuple[str, ...]
    male: tuple[str, ...]
    surnames: tuple[str, ...]
    languages: Weighted
    religions: Weighted
    adult_female: tuple[str, ...] = ()  # parents' generation, where names differ
    adult_male: tuple[str, ...] = ()

    def parent_names(self, female: bool) -> tuple[str, ...]:
        if female:
            return self.adult_female or self.female
        return self.adult_male or self.male


def _t(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _places(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


HERITAGES: Final[dict[str, Heritage]] = {
    "british": Heritage(
        _t(
            "Olivia Amelia Isla Ava Ivy Freya Lily Florence Mia Willow Rosie Sophia Isabella "
            "Grace Daisy Sienna Poppy Elsie Emily Ella Evelyn Phoebe Evie Charlotte Harper "
            "Millie Matilda Ruby Jessica Chloe Erin Megan Holly Eilidh Ffion Hannah Lucy"
        ),
        _t(
            "Noah Oliver George Arthur Leo Harry Oscar Archie Henry Theodore Freddie Jack "
            "Charlie Alfie Jacob Thomas Finley Arlo William Lucas Isaac Tommy Alexander James "
            "Joshua Samuel Reuben Ethan Callum Rhys Owen Dylan Cameron Euan Max Daniel"
        ),
        _t(
            "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson "
            "Evans Walker White Roberts Green Hall Wood Jackson Clarke Harris Lewis Martin "
            "Cooper King Baker Turner Hughes Edwards Hill Moore Clark Harrison Scott Ward "
            "Morris Watson Campbell Stewart MacDonald Lloyd Price Bennett Shaw Marshall Palmer"
        ),
        (("ENG", 0.985), ("ENB", 0.015)),
        (("NON", 0.52), ("CHR", 0.35), ("RC", 0.07), ("JEW", 0.01), ("OTH", 0.01), ("REF", 0.04)),
        _t(
            "Sarah Emma Laura Rebecca Claire Helen Rachel Nicola Kelly Joanne Michelle Amy "
            "Jennifer Lisa Katie Victoria Gemma Louise Hayley Samantha Natalie Stephanie Karen"
        ),
        _t(
            "David Paul Mark Andrew Richard Daniel Christopher Matthew Michael Stephen Simon "
            "Gareth Craig Lee Jonathan Robert Peter Ian Neil Gary Adam Carl Darren Stuart"
        ),
    ),
    "irish": Heritage(
        _t("Aoife Niamh Ciara Saoirse Roisin Orla Grainne Siobhan Mary Bridget"),
        _t("Conor Sean Cian Oisin Padraig Ciaran Liam Darragh Michael Patrick"),
        _t("Murphy Kelly O'Brien Byrne Ryan O'Connor Doyle McCarthy Gallagher Quinn Ward"),
        (("ENG", 1.0),),
        (("RC", 0.7), ("CHR", 0.1), ("NON", 0.2)),
    ),
    "polish": Heritage(
        _t("Zuzanna Julia Maja Zofia Hanna Oliwia Lena Alicja Natalia Wiktoria"),
        _t("Jakub Antoni Szymon Filip Kacper Mateusz Tomasz Piotr Marek Bartosz"),
        _t("Nowak Wojcik Mazur Krawczyk Kaczmarek Dudek Wozniak Pawlak Michalak Sikora"),
        (("POL", 0.75), ("ENG", 0.25)),
        (("RC", 0.85), ("NON", 0.15)),
    ),
    "romanian": Heritage(
        _t("Ioana Maria Elena Andreea Alexandra Bianca Daria Sofia"),
        _t("Andrei Luca Stefan Alexandru Mihai David Gabriel Darius"),
        _t("Popescu Ionescu Popa Stan Dumitru Stoica Gheorghe Matei Rusu"),
        (("RMN", 0.8), ("ENG", 0.2)),
        (("CHR", 0.9), ("NON", 0.1)),
    ),
    "lithuanian": Heritage(
        _t("Gabija Emilija Ugne Austeja Kamile Ieva"),
        _t("Matas Lukas Jokubas Dovydas Nojus Tomas"),
        _t("Kazlauskas Petrauskas Jankauskas Butkus Paulauskas Vasiliauskas"),
        (("LIT", 0.75), ("ENG", 0.25)),
        (("RC", 0.8), ("NON", 0.2)),
    ),
    "portuguese": Heritage(
        _t("Beatriz Mariana Leonor Matilde Carolina Ines"),
        _t("Rodrigo Tiago Goncalo Duarte Afonso Joao"),
        _t("Silva Santos Ferreira Pereira Oliveira Costa Rodrigues Martins"),
        (("POR", 0.7), ("ENG", 0.3)),
        (("RC", 0.8), ("NON", 0.2)),
    ),
    "pakistani": Heritage(
        _t("Aisha Maryam Zainab Fatima Hafsa Inaya Khadija Amina Zara Safa Hania Alisha"),
        _t("Muhammad Mohammed Ibrahim Yusuf Hamza Ayaan Zayn Ismail Adam Abdullah Bilal"),
        _t("Khan Hussain Ali Ahmed Iqbal Akhtar Mahmood Shah Butt Rashid Anwar Aslam"),
        (("URD", 0.4), ("PNJ", 0.2), ("ENG", 0.4)),
        (("MUS", 0.97), ("NON", 0.03)),
        _t("Sana Nadia Shazia Nasreen Farzana Rubina Saima Asma"),
        _t("Imran Tariq Asif Shahid Rizwan Faisal Kamran Naveed"),
    ),
    "bangladeshi": Heritage(
        _t("Ayesha Tahmina Sumaiya Nusrat Raisa Sadia Jannat Hafsa Maryam"),
        _t("Rayyan Tahmid Sami Arif Zakaria Mahir Ismail Musa Yahya"),
        _t("Miah Begum Rahman Uddin Islam Hossain Chowdhury Ullah Haque Karim"),
        (("BNG", 0.6), ("ENG", 0.4)),
        (("MUS", 0.97), ("NON", 0.03)),
        _t("Ruksana Shirin Rehana Salma Nazma Shilpi"),
        _t("Abdul Jamal Shahin Mizanur Anwar Kamal"),
    ),
    "gujarati": Heritage(
        _t("Priya Anaya Diya Riya Pooja Anjali Meera Nisha Aarohi Krisha"),
        _t("Aarav Rohan Dev Vihaan Krish Arjun Neel Om Yash Rishi"),
        _t("Patel Mistry Chauhan Shah Joshi Parmar Solanki Modi Desai Lad"),
        (("GUJ", 0.45), ("ENG", 0.55)),
        (("HIN", 0.8), ("MUS", 0.1), ("JAI", 0.05), ("NON", 0.05)),
        _t("Sunita Hema Bhavna Nita Rupal Jayshree"),
        _t("Rajesh Sanjay Vikram Amit Nikhil Hitesh"),
    ),
    "punjabi": Heritage(
        _t("Simran Jasmin Harleen Navneet Kiran Amrit Gurleen Jasleen Manveer"),
        _t("Arjun Kabir Harjit Gurpreet Jaspal Ranveer Harvir Jaskaran Sukhraj"),
        _t("Singh Kaur Gill Sandhu Sidhu Dhillon Bains Johal Sahota Virdi"),
        (("PNJ", 0.45), ("ENG", 0.55)),
        (("SIK", 0.8), ("HIN", 0.15), ("NON", 0.05)),
        _t("Parminder Rajinder Baljit Kulwinder Harpreet Sukhjit"),
        _t("Jasbir Sukhvinder Balwinder Kuldip Manjit Paramjit"),
    ),
    "sri_lankan": Heritage(
        _t("Anushka Tharani Nila Kavya Abinaya Dilani"),
        _t("Kajan Pirashanth Dinesh Nimal Sajeevan Thanush"),
        _t("Sivakumar Rajendran Perera Fernando Nadarajah Jayasinghe Kanagaratnam"),
        (("TAM", 0.6), ("ENG", 0.4)),
        (("HIN", 0.6), ("BUD", 0.2), ("CHR", 0.2)),
    ),
    "west_african": Heritage(
        _t(
            "Chiamaka Adaeze Amara Ifeoma Temitope Ayomide Abena Akosua Efua Precious "
            "Blessing Favour Esther Grace"
        ),
        _t("Chinedu Emeka Tobi Oluwaseun Ayodele Kwame Kofi Kwabena Yaw Samuel Emmanuel David"),
        _t(
            "Okafor Okonkwo Adeyemi Adebayo Balogun Eze Nwosu Mensah Osei Boateng Asante "
            "Owusu Oyelaran Afolabi"
        ),
        (("ENG", 0.55), ("YOR", 0.2), ("IGB", 0.1), ("AKA", 0.15)),
        (("CHR", 0.85), ("MUS", 0.1), ("NON", 0.05)),
    ),
    "somali": Heritage(
        _t("Hodan Fartun Ayan Sagal Hibaq Ikran Nimco Ubah"),
        _t("Abdi Mohamed Abdirahman Liban Mahad Yasin Guled Hamse"),
        _t("Abdi Farah Warsame Hassan Mohamud Ibrahim Osman Jama Aden"),
        (("SOM", 0.7), ("ENG", 0.3)),
        (("MUS", 1.0),),
    ),
    "caribbean": Heritage(
        _t("Tia Shanice Jada Aaliyah Kezia Imani Keisha Leah Maya Nia"),
        _t("Jayden Tyrese Kai Marcus Jermaine Devon Andre Malachi Isaiah Elijah"),
        _t(
            "Campbell Brown Williams Francis Gordon Thomas Richards Bailey Reid Grant Henry "
            "Morgan Samuels"
        ),
        (("ENG", 1.0),),
        (("CHR", 0.6), ("NON", 0.35), ("OTH", 0.05)),
        _t("Marcia Sonia Paulette Donna Claudette Yvonne"),
        _t("Delroy Winston Clive Errol Leroy Trevor"),
    ),
    "chinese": Heritage(
        _t("Mei Xin Yu Hui Jia Ling Wen Chloe Grace"),
        _t("Wei Jun Hao Ming Zhi Kai Ethan Ryan"),
        _t("Chen Wang Li Zhang Liu Wong Cheung Lam Ng Chan Lee Ho"),
        (("CHIM", 0.35), ("CHIC", 0.25), ("ENG", 0.4)),
        (("NON", 0.6), ("BUD", 0.2), ("CHR", 0.2)),
    ),
    "arab": Heritage(
        _t("Layla Noor Yasmin Mariam Hiba Rania Salma Lina"),
        _t("Omar Ali Karim Youssef Ahmad Mustafa Khalid Hassan"),
        _t("Haddad Mansour Nasser Saleh Aziz Karimi Hamdan Abboud"),
        (("ARA", 0.7), ("ENG", 0.3)),
        (("MUS", 0.9), ("CHR", 0.1)),
    ),
    "turkish": Heritage(
        _t("Elif Zeynep Defne Ecem Azra Leyla"),
        _t("Emir Yusuf Mert Kerem Can Baran"),
        _t("Yilmaz Demir Kaya Sahin Celik Aydin Ozturk"),
        (("TUR", 0.7), ("ENG", 0.3)),
        (("MUS", 0.85), ("NON", 0.15)),
    ),
}


@dataclass(frozen=True, slots=True)
class Ethnicity:
    code: str
    description: str
    weight: float
    heritages: tuple[str, ...]  # one family heritage; two for mixed (mother's, father's)
    traveller: bool = False


ETHNICITIES: Final[tuple[Ethnicity, ...]] = (
    Ethnicity("WBRI", "White - British", 0.63, ("british",)),
    Ethnicity("WIRI", "White - Irish", 0.004, ("irish",)),
    Ethnicity("WIRT", "Traveller of Irish heritage", 0.002, ("irish",), traveller=True),
    Ethnicity("WROM", "Gypsy / Roma", 0.004, ("romanian",), traveller=True),
    Ethnicity("WOTH", "Any other White background", 0.045, ("polish",)),
    Ethnicity("WOTH", "Any other White background", 0.015, ("romanian",)),
    Ethnicity("WOTH", "Any other White background", 0.007, ("lithuanian",)),
    Ethnicity("WOTH", "Any other White background", 0.008, ("portuguese",)),
    Ethnicity("MWBC", "White and Black Caribbean", 0.015, ("british", "caribbean")),
    Ethnicity("MWBA", "White and Black African", 0.009, ("british", "west_african")),
    Ethnicity("MWAS", "White and Asian", 0.018, ("british", "pakistani")),
    Ethnicity("MOTH", "Any other mixed background", 0.022, ("british", "arab")),
    Ethnicity("AIND", "Indian", 0.018, ("gujarati",)),
    Ethnicity("AIND", "Indian", 0.018, ("punjabi",)),
    Ethnicity("APKN", "Pakistani", 0.045, ("pakistani",)),
    Ethnicity("ABAN", "Bangladeshi", 0.019, ("bangladeshi",)),
    Ethnicity("AOTH", "Any other Asian background", 0.019, ("sri_lankan",)),
    Ethnicity("BCRB", "Black Caribbean", 0.01, ("caribbean",)),
    Ethnicity("BAFR", "Black - African", 0.03, ("west_african",)),
    Ethnicity("BAFR", "Black - African", 0.015, ("somali",)),
    Ethnicity("BOTH", "Any other Black background", 0.008, ("west_african", "caribbean")),
    Ethnicity("CHNE", "Chinese", 0.007, ("chinese",)),
    Ethnicity("OOTH", "Any other ethnic group", 0.013, ("arab",)),
    Ethnicity("OOTH", "Any other ethnic group", 0.009, ("turkish",)),
    Ethnicity("REFU", "Refused", 0.006, ("british",)),
    Ethnicity("NOBT", "Information not yet obtained", 0.004, ("british",)),
)

LANGUAGES: Final = {
    "ENG": "English",
    "ENB": "Not known but believed to be English",
    "POL": "Polish",
    "RMN": "Romanian",
    "LIT": "Lithuanian",
    "POR": "Portuguese",
    "URD": "Urdu",
    "PNJ": "Panjabi",
    "BNG": "Bengali",
    "GUJ": "Gujarati",
    "TAM": "Tamil",
    "YOR": "Yoruba",
    "IGB": "Igbo",
    "AKA": "Akan/Twi-Fante",
    "SOM": "Somali",
    "CHIM": "Chinese (Mandarin/Putonghua)",
    "CHIC": "Chinese (Cantonese)",
    "ARA": "Arabic",
    "TUR": "Turkish",
}
ENGLISH_CODES: Final = frozenset({"ENG", "ENB"})

RELIGIONS: Final = {
    "NON": "No religion",
    "CHR": "Christian",
    "RC": "Roman Catholic",
    "MUS": "Muslim",
    "HIN": "Hindu",
    "SIK": "Sikh",
    "JEW": "Jewish",
    "BUD": "Buddhist",
    "JAI": "Jain",
    "OTH": "Other religion",
    "REF": "Refused",
}

NICKNAMES: Final = {
    "Alexander": "Alex",
    "Theodore": "Theo",
    "William": "Will",
    "Samuel": "Sam",
    "Joshua": "Josh",
    "Daniel": "Dan",
    "Thomas": "Tom",
    "Jacob": "Jake",
    "Matilda": "Tilly",
    "Isabella": "Bella",
    "Charlotte": "Lottie",
    "Florence": "Flo",
    "Jessica": "Jess",
    "Sophia": "Sophie",
    "Muhammad": "Mo",
    "Mohammed": "Mo",
    "Oluwaseun": "Seun",
    "Temitope": "Tope",
    "Ayomide": "Ayo",
    "Chiamaka": "Amaka",
    "Abdirahman": "Abdi",
    "Alexandra": "Sasha",
    "Zuzanna": "Zuza",
}


@dataclass(frozen=True, slots=True)
class Region:
    """A real town with real postcode districts; streets are invented on top."""

    town: str
    county: str | None
    local_authority: str
    la_code: int
    outward_codes: tuple[str, ...]
    localities: tuple[str, ...]
    landline_prefix: str  # an Ofcom drama range: 1,000 numbers follow the prefix


REGIONS: Final[tuple[Region, ...]] = (
    Region(
        "Leeds",
        "West Yorkshire",
        "Leeds",
        383,
        _t("LS6 LS7 LS8 LS11 LS12 LS17 LS18"),
        _places("Headingley, Chapel Allerton, Roundhay, Armley, Beeston, Horsforth, Kirkstall"),
        "0113 496 0",
    ),
    Region(
        "Sheffield",
        "South Yorkshire",
        "Sheffield",
        373,
        _t("S2 S6 S7 S8 S10 S11"),
        _places("Crookes, Hillsborough, Walkley, Nether Edge, Darnall, Ecclesall"),
        "0114 496 0",
    ),
    Region(
        "Nottingham",
        "Nottinghamshire",
        "Nottingham",
        892,
        _t("NG2 NG3 NG5 NG6 NG7 NG8"),
        _places("Sneinton, Carlton, Arnold, Bulwell, Basford, Lenton"),
        "0115 496 0",
    ),
    Region(
        "Leicester",
        "Leicestershire",
        "Leicester",
        856,
        _t("LE2 LE3 LE4 LE5"),
        _places("Belgrave, Evington, Aylestone, Knighton, Braunstone, Humberstone"),
        "0116 496 0",
    ),
    Region(
        "Bristol",
        None,
        "Bristol, City of",
        801,
        _t("BS3 BS4 BS5 BS6 BS7 BS16"),
        _places("Bedminster, Clifton, Easton, Fishponds, Southville, Horfield"),
        "0117 496 0",
    ),
    Region(
        "Reading",
        "Berkshire",
        "Reading",
        870,
        _t("RG1 RG2 RG4 RG6 RG30 RG31"),
        _places("Caversham, Tilehurst, Earley, Whitley, Southcote"),
        "0118 496 0",
    ),
    Region(
        "Birmingham",
        "West Midlands",
        "Birmingham",
        330,
        _t("B10 B11 B13 B14 B20 B23"),
        _places("Handsworth, Moseley, Erdington, Sparkhill, Kings Heath, Small Heath"),
        "0121 496 0",
    ),
    Region(
        "Manchester",
        "Greater Manchester",
        "Manchester",
        352,
        _t("M14 M16 M19 M20 M21"),
        _places("Didsbury, Levenshulme, Chorlton, Longsight, Withington, Fallowfield"),
        "0161 496 0",
    ),
    Region(
        "Liverpool",
        "Merseyside",
        "Liverpool",
        341,
        _t("L4 L8 L15 L17 L18"),
        _places("Anfield, Wavertree, Toxteth, Walton, Allerton, Aigburth"),
        "0151 496 0",
    ),
    Region(
        "Newcastle upon Tyne",
        "Tyne and Wear",
        "Newcastle upon Tyne",
        391,
        _t("NE2 NE4 NE5 NE6 NE7"),
        _places("Heaton, Jesmond, Byker, Fenham, Gosforth"),
        "0191 498 0",
    ),
    Region(
        "London",
        None,
        "Barnet",
        302,
        _t("N3 N12 N20 NW4 NW7 NW9"),
        _places("Finchley, Hendon, Mill Hill, Whetstone, Colindale"),
        "020 7946 0",
    ),
)
MOBILE_PREFIX: Final = "07700 900"  # Ofcom drama mobiles: 07700 900000-900999
EMAIL_DOMAINS: Final = ("example.com", "example.net", "example.org")
POSTCODE_INWARD_LETTERS: Final = "ABDEFGHJLNPQRSTUWXYZ"  # never C I K M O V

STREET_ROOTS: Final = _t(
    "Church Mill Station Victoria Albert Park Grange Manor Chapel Oak Beech Elm Ash Willow "
    "Cedar Hawthorn Meadow Orchard Highfield Westfield Queens Windsor Clarence Nelson "
    "Wellington Stanley Brook Fern Heather Linden Rowan Spring Sycamore Laburnum Poplar "
    "Hazel Holly Larch Juniper Clover Primrose Bluebell Foxglove Kestrel Lark Swallow Wren "
    "Heron Otter Badger Thistle Quarry Tannery Weavers Coopers Mason Cobblers Ropewalk"
)
STREET_SUFFIXES: Final = _t(
    "Road Street Lane Avenue Close Drive Crescent Grove Way Gardens Terrace Place Court Mews "
    "View Rise"
)

SCHOOL_PLACES: Final = _t(
    "Oakfield Meadowbank Brookside Hollybush Kingsmead Westfield Ashgrove Fernhill "
    "Millbrook Springwood Larkrise Woodlands Greenacre Highcroft Elmhurst Riverside"
)
PRIMARY_SUFFIXES: Final = (
    "Primary School",
    "Primary Academy",
    "Community Primary School",
    "C of E Primary School",
)
SECONDARY_SUFFIXES: Final = ("Academy", "High School", "School", "Community College")
HOUSES: Final = _t(
    "Austen Brunel Curie Darwin Eliot Franklin Hawking Lovelace Newton Nightingale Seacole "
    "Turing Wilberforce Pankhurst Attenborough Shakespeare"
)

SEN_NEEDS: Final = {
    "SPLD": "Specific Learning Difficulty",
    "MLD": "Moderate Learning Difficulty",
    "SLD": "Severe Learning Difficulty",
    "PMLD": "Profound & Multiple Learning Difficulty",
    "SEMH": "Social, Emotional and Mental Health",
    "SLCN": "Speech, Language and Communication Needs",
    "HI": "Hearing Impairment",
    "VI": "Visual Impairment",
    "MSI": "Multi-Sensory Impairment",
    "PD": "Physical Disability",
    "ASD": "Autistic Spectrum Disorder",
    "OTH": "Other Difficulty/Disability",
    "NSA": "SEN support but no specialist assessment of type of need",
}
SEN_NEED_WEIGHTS: Final[dict[tuple[str, str], Weighted]] = {
    ("primary", "K"): (
        ("SLCN", 34),
        ("SEMH", 20),
        ("MLD", 12),
        ("ASD", 9),
        ("SPLD", 8),
        ("NSA", 6),
        ("OTH", 4),
        ("PD", 2),
        ("HI", 2),
        ("VI", 1),
        ("SLD", 2),
    ),
    ("secondary", "K"): (
        ("SEMH", 26),
        ("SPLD", 20),
        ("SLCN", 13),
        ("MLD", 12),
        ("ASD", 11),
        ("OTH", 5),
        ("NSA", 5),
        ("HI", 2),
        ("PD", 2),
        ("VI", 1),
    ),
    ("primary", "E"): (
        ("ASD", 33),
        ("SLCN", 24),
        ("SEMH", 12),
        ("SLD", 9),
        ("MLD", 7),
        ("PD", 5),
        ("PMLD", 3),
        ("HI", 2),
        ("VI", 2),
        ("MSI", 1),
        ("SPLD", 2),
    ),
    ("secondary", "E"): (
        ("ASD", 35),
        ("SEMH", 18),
        ("SLCN", 14),
        ("MLD", 10),
        ("SLD", 7),
        ("SPLD", 6),
        ("PD", 4),
        ("HI", 2),
        ("VI", 2),
        ("PMLD", 1),
        ("MSI", 1),
    ),
}

SUBJECTS: Final = {
    "Ma": "Mathematics",
    "En": "English",
    "Sc": "Science",
    "Hi": "History",
    "Gg": "Geography",
    "Fr": "French",
    "Sp": "Spanish",
    "Ar": "Art and Design",
    "Mu": "Music",
    "Dr": "Drama",
    "Dt": "Design and Technology",
    "Co": "Computing",
    "Pe": "Physical Education",
    "Re": "Religious Education",
    "Bs": "Business",
    "Fd": "Food Preparation and Nutrition",
    "Bi": "Biology",
    "Ch": "Chemistry",
    "Ph": "Physics",
    "Ps": "Psychology",
    "So": "Sociology",
    "Ec": "Economics",
    "Lt": "English Literature",
    "Fm": "Further Mathematics",
}
# Teachers' home rooms are named by department; several subjects share a suite.
ROOM_PREFIXES: Final = {
    "Ma": "MA",
    "Fm": "MA",
    "En": "EN",
    "Lt": "EN",
    "Sc": "SC",
    "Bi": "SC",
    "Ch": "SC",
    "Ph": "SC",
    "Hi": "HU",
    "Gg": "HU",
    "Re": "HU",
    "Ps": "HU",
    "So": "HU",
    "Fr": "LA",
    "Sp": "LA",
    "Ar": "AR",
    "Mu": "MU",
    "Dr": "DR",
    "Dt": "DT",
    "Fd": "DT",
    "Co": "IT",
    "Bs": "BS",
    "Ec": "BS",
    "Pe": "PE",
}

# (subject, periods a week, taught in ability sets rather than tutor groups)
KS3_CURRICULUM: Final = (
    ("En", 4, True),
    ("Ma", 4, True),
    ("Sc", 3, True),
    ("Hi", 2, False),
    ("Gg", 2, False),
    ("Fr", 2, False),
    ("Ar", 1, False),
    ("Mu", 1, False),
    ("Dr", 1, False),
    ("Dt", 1, False),
    ("Co", 1, False),
    ("Pe", 2, False),
    ("Re", 1, False),
)
KS4_CORE: Final = (
    ("En", 4, True),
    ("Ma", 4, True),
    ("Sc", 5, True),
    ("Pe", 1, False),
    ("Re", 1, False),
)
# Option blocks: (block letter, periods a week, subjects offered in it)
KS4_OPTIONS: Final = (
    ("A", 3, ("Hi", "Gg")),
    ("B", 3, ("Fr", "Sp", "Co", "Gg")),
    ("C", 2, ("Ar", "Dt", "Bs", "Hi")),
    ("D", 2, ("Mu", "Dr", "Fd", "Pe")),
)
KS5_OPTIONS: Final = (
    ("A", 5, ("Ma", "Bi", "Hi", "Ps")),
    ("B", 5, ("Ch", "Lt", "Gg", "So", "Ec")),
    ("C", 5, ("Ph", "Ar", "Co", "Bs", "Fm")),
)
PRIMARY_MORNING: Final = ("English", "Mathematics", "Phonics and Reading")
PRIMARY_AFTERNOON: Final = (
    "Science",
    "History",
    "Geography",
    "Art and Design",
    "Design and Technology",
    "Music",
    "Physical Education",
    "Physical Education",
    "Religious Education",
    "PSHE",
    "Computing",
    "French",
)


@dataclass(frozen=True, slots=True)
class ExamSpec:
    awarding_body: str
    code: str
    title: str
    tiered: bool = False


GCSE_SPECS: Final[dict[str, tuple[ExamSpec, ...]]] = {
    "En": (
        ExamSpec("AQA", "8700", "English Language"),
        ExamSpec("AQA", "8702", "English Literature"),
    ),
    "Ma": (ExamSpec("Pearson Edexcel", "1MA1", "Mathematics", tiered=True),),
    "Sc": (ExamSpec("AQA", "8464", "Combined Science: Trilogy", tiered=True),),
    "Hi": (ExamSpec("AQA", "8145", "History"),),
    "Gg": (ExamSpec("AQA", "8035", "Geography"),),
    "Fr": (ExamSpec("AQA", "8658", "French", tiered=True),),
    "Sp": (ExamSpec("AQA", "8698", "Spanish", tiered=True),),
    "Co": (ExamSpec("OCR", "J277", "Computer Science"),),
    "Ar": (ExamSpec("AQA", "8201", "Art and Design"),),
    "Dt": (ExamSpec("AQA", "8552", "Design and Technology"),),
    "Bs": (ExamSpec("Pearson Edexcel", "1BS0", "Business"),),
    "Mu": (ExamSpec("AQA", "8271", "Music"),),
    "Dr": (ExamSpec("AQA", "8261", "Drama"),),
    "Fd": (ExamSpec("AQA", "8585", "Food Preparation and Nutrition"),),
    "Pe": (ExamSpec("AQA", "8582", "Physical Education"),),
    "Re": (ExamSpec("AQA", "8062", "Religious Studies"),),
}
A_LEVEL_SPECS: Final[dict[str, ExamSpec]] = {
    "Ma": ExamSpec("Pearson Edexcel", "9MA0", "Mathematics"),
    "Fm": ExamSpec("Pearson Edexcel", "9FM0", "Further Mathematics"),
    "Bi": ExamSpec("AQA", "7402", "Biology"),
    "Ch": ExamSpec("AQA", "7405", "Chemistry"),
    "Ph": ExamSpec("AQA", "7408", "Physics"),
    "Hi": ExamSpec("AQA", "7042", "History"),
    "Gg": ExamSpec("AQA", "7037", "Geography"),
    "Ps": ExamSpec("AQA", "7182", "Psychology"),
    "So": ExamSpec("AQA", "7192", "Sociology"),
    "Lt": ExamSpec("AQA", "7712", "English Literature A"),
    "Ec": ExamSpec("Pearson Edexcel", "9EC0", "Economics A"),
    "Ar": ExamSpec("AQA", "7202", "Art and Design: Fine Art"),
    "Co": ExamSpec("OCR", "H446", "Computer Science"),
    "Bs": ExamSpec("AQA", "7132", "Business"),
}


@dataclass(frozen=True, slots=True)
class BehaviourType:
    name: str
    points: int
    outcomes: tuple[str | None, ...]
    weight: float


_SANCTIONS: Final = ("Verbal warning", "Verbal warning", "Detention", "Parent contacted")
_SERIOUS: Final = ("Detention", "Removal from lesson", "Internal exclusion", "Suspension")
_PRAISE: Final = ("Postcard home", "Certificate", "Praise in assembly", None)
_PRIMARY_SANCTIONS: Final = ("Verbal warning", "Time out", "Loss of playtime", "Parent informed")

BEHAVIOUR_TYPES: Final[dict[str, tuple[BehaviourType, ...]]] = {
    "secondary": (
        BehaviourType("Disruption", -1, _SANCTIONS, 10),
        BehaviourType("Late to lesson", -1, _SANCTIONS, 6),
        BehaviourType("No homework", -1, _SANCTIONS, 8),
        BehaviourType("Equipment", -1, ("Verbal warning",), 4),
        BehaviourType("Uniform", -1, ("Verbal warning", "Detention"), 3),
        BehaviourType("Mobile phone", -2, ("Phone confiscated", "Detention"), 3),
        BehaviourType("Defiance", -2, _SERIOUS, 3),
        BehaviourType("Truancy", -3, ("Detention", "Parent contacted"), 1),
        BehaviourType("Bullying", -5, _SERIOUS, 0.5),
        BehaviourType("Fighting", -5, _SERIOUS, 0.5),
        BehaviourType("Merit", 1, _PRAISE, 30),
        BehaviourType("Achievement", 2, _PRAISE, 12),
        BehaviourType("Commendation", 3, _PRAISE, 4),
        BehaviourType("Headteacher award", 5, ("Certificate",), 1),
    ),
    "primary": (
        BehaviourType("Low-level disruption", -1, _PRIMARY_SANCTIONS, 8),
        BehaviourType("Unkind words", -1, _PRIMARY_SANCTIONS, 4),
        BehaviourType("Not following instructions", -1, _PRIMARY_SANCTIONS, 5),
        BehaviourType("Physical behaviour", -3, ("Loss of playtime", "Parent informed"), 1),
        BehaviourType("House point", 1, _PRAISE, 40),
        BehaviourType("Star of the week", 3, ("Certificate", "Praise in assembly"), 4),
        BehaviourType("Headteacher award", 5, ("Certificate",), 1),
    ),
}

# (role, how many; 0 means "everyone left over")
SUPPORT_ROLES: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    "secondary": (
        ("Business Manager", 1),
        ("Office Manager", 1),
        ("Receptionist", 2),
        ("Data Manager", 1),
        ("Exams Officer", 1),
        ("Attendance Officer", 1),
        ("Site Manager", 1),
        ("Caretaker", 2),
        ("IT Technician", 2),
        ("Science Technician", 3),
        ("Librarian", 1),
        ("Cover Supervisor", 4),
        ("Pastoral Manager", 3),
        ("Teaching Assistant", 0),
    ),
    "primary": (
        ("School Business Manager", 1),
        ("Administrator", 2),
        ("Site Manager", 1),
        ("Learning Mentor", 1),
        ("Midday Supervisor", 4),
        ("Teaching Assistant", 0),
    ),
}
