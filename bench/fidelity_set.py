"""The fixed chats and factual questions ``bench.fidelity`` measures every weight form on.

``CHATS`` (64) mix facts, arithmetic, instructions, code, summaries and a few
multi-turn conversations; ``FACTS`` (48) are questions with short known answers, a
reply scoring when it contains one of the accepted spellings (case-insensitive).
Both run under the default system prompt, as a new chat does.
"""

from __future__ import annotations

SYSTEM_PROMPT = "You are a helpful assistant."

_SINGLE = [
    # facts
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "Why is the sky blue?",
    "How many continents are there, and which is the largest?",
    "What do bees make?",
    "What is photosynthesis?",
    "Name three planets of the solar system.",
    "What language is spoken in Brazil?",
    "What is the boiling point of water at sea level?",
    "Who painted the Mona Lisa?",
    "What is the largest ocean on Earth?",
    "What is DNA?",
    # arithmetic
    "What is 12 + 7?",
    "What is 9 times 8?",
    "If I have 15 apples and eat 4, how many are left?",
    "What is half of 250?",
    "Is 17 a prime number?",
    "Convert 3 hours into minutes.",
    "What is 100 divided by 4?",
    "A train travels 60 km in one hour. How far does it go in 3 hours?",
    # instructions
    "Give me three tips for sleeping better.",
    "Write a haiku about the sea.",
    "List five fruits that are red.",
    "Write a short thank-you note to a colleague who helped me move.",
    "Suggest a name for a grey cat.",
    "Explain how to boil an egg, step by step.",
    "Give me a packing list for a weekend camping trip.",
    "Write one sentence that uses the word 'serendipity'.",
    "Tell me a short joke about computers.",
    "How do I politely decline a meeting invitation?",
    "Describe autumn in two sentences.",
    "What should I eat before running a marathon?",
    # code
    "Write a Python function that returns the square of a number.",
    "How do I reverse a list in Python?",
    "What does the SQL statement SELECT * FROM users; do?",
    "Write a JavaScript function that adds two numbers.",
    "What is the difference between a list and a tuple in Python?",
    "How do I print 'hello' in C?",
    "Explain what a for loop is.",
    "Write a bash command that counts the lines of a file called notes.txt.",
    "What is a variable in programming?",
    "How do I read a file line by line in Python?",
    # summaries
    "Summarise in one sentence: The meeting moved to Thursday because the room was booked. "
    "Everyone should bring the quarterly figures and a list of open questions.",
    "Summarise: Bees pollinate flowers while collecting nectar. Without them many crops would "
    "give far smaller harvests, which is why farmers sometimes rent hives.",
    "Give the main idea of this text: Regular exercise improves mood, sleep and heart health, "
    "and even a short daily walk makes a difference.",
    "Summarise this email: Hi team, the office will be closed on Monday for maintenance. "
    "Please work from home and keep your laptops charged. Thanks, Dana.",
    "In one line, what is this about? The library extends its opening hours during exams and "
    "adds fifty quiet study seats on the second floor.",
    "Summarise: The recipe needs flour, eggs, milk and a pinch of salt. Whisk everything, rest "
    "the batter for ten minutes, then fry thin pancakes in a hot pan.",
    "Shorten this: Our new app lets you track your daily water intake, reminds you to drink, "
    "and shows weekly charts of your progress.",
    "What is the key point? Cities that plant trees along streets are cooler in summer, and "
    "their residents use less air conditioning.",
]

_MULTI_TURN = [
    [("user", "Hi! My name is Sam."), ("assistant", "Hello Sam! How can I help you today?"), ("user", "What is my name?")],
    [
        ("user", "I want to learn to cook."),
        ("assistant", "Great idea! Start with simple dishes like pasta or omelettes."),
        ("user", "How do I make an omelette?"),
    ],
    [("user", "What is 5 + 5?"), ("assistant", "5 + 5 = 10."), ("user", "And if I add 3 more?")],
    [
        ("user", "Recommend a book."),
        ("assistant", "You might enjoy 'The Hobbit' by J.R.R. Tolkien."),
        ("user", "What is it about?"),
    ],
    [
        ("user", "I have a job interview tomorrow."),
        ("assistant", "Good luck! Would you like some tips?"),
        ("user", "Yes, please give me three."),
    ],
    [
        ("user", "Write a Python function that adds two numbers."),
        ("assistant", "def add(a, b):\n    return a + b"),
        ("user", "Now make it add three numbers."),
    ],
    [("user", "What is the capital of Italy?"), ("assistant", "The capital of Italy is Rome."), ("user", "And of Spain?")],
    [
        ("user", "My plant's leaves are turning yellow."),
        ("assistant", "That can mean too much water. How often do you water it?"),
        ("user", "Every day."),
    ],
    [
        ("user", "Translate 'good morning' into Spanish."),
        ("assistant", "'Good morning' in Spanish is 'buenos días'."),
        ("user", "And into French?"),
    ],
    [
        ("user", "Tell me a fun fact about octopuses."),
        ("assistant", "Octopuses have three hearts!"),
        ("user", "Why do they need three?"),
    ],
    [
        ("user", "Plan a short morning routine for me."),
        ("assistant", "Wake at 7, drink water, stretch for five minutes, then have breakfast."),
        ("user", "Add something for the mind."),
    ],
    [("user", "Is a tomato a fruit?"), ("assistant", "Botanically, yes: a tomato is a fruit."), ("user", "Then why do we cook it like a vegetable?")],
    [
        ("user", "How many legs does a spider have?"),
        ("assistant", "A spider has eight legs."),
        ("user", "And an insect?"),
    ],
    [
        ("user", "I'm feeling stressed about work."),
        ("assistant", "I'm sorry to hear that. What is weighing on you most?"),
        ("user", "Too many deadlines this week."),
    ],
    [
        ("user", "Explain what a noun is."),
        ("assistant", "A noun names a person, place, thing or idea."),
        ("user", "Give me three examples."),
    ],
    [("user", "What's 2 to the power of 3?"), ("assistant", "2 to the power of 3 is 8."), ("user", "And 2 to the power of 4?")],
]


def _chat(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}] + [{"role": r, "content": c} for r, c in turns]


CHATS: list[list[dict[str, str]]] = [_chat([("user", q)]) for q in _SINGLE] + [_chat(t) for t in _MULTI_TURN]

# (question, accepted answers)
FACTS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of the United Kingdom?", ("london",)),
    ("What is the capital of Russia?", ("moscow",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("What is the capital of China?", ("beijing",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("What is the capital of Greece?", ("athens",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Which planet is closest to the Sun?", ("mercury",)),
    ("What star is at the center of our solar system?", ("sun",)),
    ("What is the chemical symbol for water?", ("h2o", "h₂o")),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "co2", "co₂")),
    ("What gas do humans need to breathe to live?", ("oxygen",)),
    ("What is the freezing point of water in degrees Celsius?", ("0", "zero")),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("How many months are there in a year?", ("12", "twelve")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("What is 2 plus 2?", ("4", "four")),
    ("What is 10 minus 3?", ("7", "seven")),
    ("What is 5 times 6?", ("30", "thirty")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("Who developed the theory of relativity?", ("einstein",)),
    ("Who was the first person to walk on the Moon?", ("armstrong",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is the longest river in Africa?", ("nile",)),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What is the largest desert in Africa?", ("sahara",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What color are ripe bananas?", ("yellow",)),
    ("What color do you get by mixing blue and yellow?", ("green",)),
    ("What do bees make?", ("honey",)),
    ("What animal is known as the king of the jungle?", ("lion",)),
    ("What is the largest mammal in the world?", ("blue whale", "whale")),
    ("What language is mainly spoken in Brazil?", ("portuguese",)),
    ("What language is mainly spoken in Mexico?", ("spanish",)),
    ("What is the currency of Japan?", ("yen",)),
    ("What is the currency of the United States?", ("dollar",)),
    ("What is the hardest natural substance?", ("diamond",)),
    ("What organ pumps blood through the human body?", ("heart",)),
]


def fact_chat(question: str) -> list[dict[str, str]]:
    return _chat([("user", question)])


def fact_correct(reply: str, accepted: tuple[str, ...]) -> bool:
    lowered = reply.lower()
    return any(answer in lowered for answer in accepted)
