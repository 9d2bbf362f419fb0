"""Word pools and templates for the built-in tasks.

Pools are deliberately larger than needed: the builders drop every word that is not one token (with its
leading space) for the tokenizer at hand, and still have enough left for 32+ distinct pairs on GPT-2 and
SmolLM2 style byte-level BPE vocabularies.
"""

from __future__ import annotations

MALE_NAMES = (
    "John", "James", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Charles",
    "Daniel", "Matthew", "Anthony", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "George",
    "Edward", "Ryan", "Jacob", "Gary", "Eric", "Stephen", "Larry", "Justin", "Scott", "Frank", "Samuel",
    "Patrick", "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Henry", "Adam", "Peter", "Nathan", "Kyle",
    "Walter", "Harold", "Jeremy", "Carl", "Keith", "Roger", "Sean", "Arthur", "Austin", "Noah", "Jesse",
    "Joe", "Bryan", "Billy", "Jordan", "Albert", "Dylan", "Bruce", "Gabriel", "Alan", "Juan", "Logan",
    "Wayne", "Ralph", "Roy", "Eugene", "Randy", "Vincent", "Russell", "Louis", "Philip", "Bobby", "Johnny",
    "Bradley", "Tom", "Max", "Sam", "Ben", "Luke", "Simon", "Oliver", "Harry", "Victor", "Martin", "Leo",
    "Oscar", "Ian", "Neil", "Tim", "Jim", "Bob", "Fred", "Greg", "Jeff", "Dan", "Mike", "Chris", "Alex",
    "Nick",
)  # fmt: skip

FEMALE_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Emily", "Donna", "Michelle", "Carol",
    "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia", "Kathleen", "Amy",
    "Angela", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen", "Samantha", "Katherine", "Christine",
    "Rachel", "Catherine", "Maria", "Heather", "Diane", "Julie", "Joyce", "Victoria", "Kelly", "Lauren",
    "Joan", "Evelyn", "Olivia", "Megan", "Martha", "Andrea", "Hannah", "Ann", "Alice", "Teresa", "Sara",
    "Julia", "Grace", "Judy", "Marie", "Diana", "Natalie", "Sophia", "Rose", "Charlotte", "Lucy", "Sophie",
    "Kate", "Jane", "Ellen", "Claire", "Ruth", "Jenny", "Amber", "Jessie", "Chloe", "Zoe", "Eva", "Lily",
    "Molly", "Nina", "Paula", "Tina", "Wendy", "Sally", "Susie",
)  # fmt: skip

# IOI: names from both pools; IOI makes no use of gender.
IOI_NAMES = tuple(dict.fromkeys(MALE_NAMES + FEMALE_NAMES))

# Wang et al. 2022 (arXiv:2211.00593), appendix: sentences with [A] = indirect object, [B] = subject.
# Written in BABA order; ABBA swaps the first two names. Objects take "a", so they start with a consonant.
IOI_TEMPLATES_BABA = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
IOI_PLACES = (
    "store",
    "garden",
    "restaurant",
    "school",
    "hospital",
    "office",
    "house",
    "station",
    "park",
    "beach",
)
IOI_OBJECTS = (
    "ring",
    "kiss",
    "bone",
    "basketball",
    "computer",
    "necklace",
    "drink",
    "snack",
    "book",
    "letter",
)

# Hanna et al. 2023 (arXiv:2305.00586), section 2: "The [noun] lasted from the year XXYY to the year XX".
GT_TEMPLATE = "The {noun} lasted from the year {start} to the year {century}"
GT_NOUNS = (
    "war", "expedition", "project", "reign", "siege", "voyage", "campaign", "occupation", "revolution",
    "dynasty", "conflict", "rebellion", "strike", "truce", "alliance", "empire", "kingdom", "treaty",
    "famine", "drought", "epidemic", "pilgrimage", "crusade", "journey", "construction", "trial",
    "marriage", "tour",
)  # fmt: skip
GT_CENTURIES = (11, 12, 13, 14, 15, 16, 17)

FR_TEMPLATES = (
    "The capital of {country} is",
    "The capital city of {country} is",
    "The government of {country} is based in the city of",
    "In {country}, the capital city is",
    "The largest city and capital of {country} is",
)
# (country, capital): capitals must be one token; countries may be several (corrupt pairs match lengths).
COUNTRY_CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Canada", "Ottawa"), ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"),
    ("Poland", "Warsaw"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Thailand", "Bangkok"), ("Kenya", "Nairobi"),
    ("Peru", "Lima"), ("Cuba", "Havana"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Afghanistan", "Kabul"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"), ("Scotland", "Edinburgh"), ("England", "London"), ("Wales", "Cardiff"),
    ("Australia", "Canberra"), ("Argentina", "Buenos"), ("Chile", "Santiago"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("Mexico", "Mexico"), ("India", "Delhi"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"), ("Vietnam", "Hanoi"), ("Philippines", "Manila"),
    ("Indonesia", "Jakarta"), ("Malaysia", "Kuala"), ("Korea", "Seoul"), ("Israel", "Jerusalem"),
    ("Jordan", "Amman"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Czechia", "Prague"), ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Tunisia", "Tunis"),
    ("Libya", "Tripoli"), ("Sudan", "Khartoum"), ("Uganda", "Kampala"), ("Iceland", "Reykjavik"),
)  # fmt: skip

# Mathwin et al. 2023 (gendered pronoun circuit in GPT-2 small): "So [name] is a really great friend, isn't".
GP_TEMPLATES = (
    "So {name} is a really great friend, isn't",
    "When {name} woke up this morning,",
    "After {name} finished the exam,",
    "I asked {name} about the trip, and",
    "Everyone agreed that {name} was right, because",
    "Yesterday {name} went to the market, where",
)
PRONOUNS = {"male": "he", "female": "she"}

# Subject-verb agreement (Linzen et al. 2016; Finlayson et al. 2021, arXiv:2106.06087): the verb agrees with
# the subject, not with the attractor noun in the prepositional phrase.
SVA_TEMPLATES = (
    "The {noun} near the {attractor}",
    "The {noun} behind the {attractor}",
    "The {noun} next to the {attractor}",
    "The {noun} of the {attractor}",
    "The {noun} beside the {attractor}",
    "The {noun} with the {attractor}",
)
SVA_VERBS = (("is", "are"), ("was", "were"), ("has", "have"))
SVA_NOUNS = (
    ("key", "keys"), ("dog", "dogs"), ("cat", "cats"), ("book", "books"), ("car", "cars"),
    ("house", "houses"), ("tree", "trees"), ("friend", "friends"), ("teacher", "teachers"),
    ("student", "students"), ("doctor", "doctors"), ("bird", "birds"), ("author", "authors"),
    ("farmer", "farmers"), ("player", "players"), ("girl", "girls"), ("boy", "boys"), ("king", "kings"),
    ("officer", "officers"), ("window", "windows"), ("table", "tables"), ("chair", "chairs"),
    ("picture", "pictures"), ("letter", "letters"), ("manager", "managers"), ("pilot", "pilots"),
    ("lawyer", "lawyers"), ("singer", "singers"), ("worker", "workers"), ("child", "children"),
    ("man", "men"), ("woman", "women"), ("door", "doors"), ("box", "boxes"), ("horse", "horses"),
    ("road", "roads"), ("river", "rivers"), ("bank", "banks"), ("ship", "ships"), ("song", "songs"),
    ("game", "games"), ("phone", "phones"), ("plant", "plants"), ("wall", "walls"), ("leader", "leaders"),
    ("member", "members"), ("user", "users"), ("parent", "parents"), ("village", "villages"),
)  # fmt: skip
