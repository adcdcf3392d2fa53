# ruff: noqa: E501  (long lines are demonstration text)
"""Generate the demo instruction demonstrations (committed JSONL under data/).

Usage: python tunes/demo/make_data.py        (stdlib only, deterministic: random.Random(0))

Writes four chat-format files, one demonstration per line
({"messages": [{"role": ..., "content": ...}, ...]}, last message from the assistant):

- base.jsonl     plain short answers to everyday questions and to customer/legal questions
- support.jsonl  friendly support style: "Thanks for reaching out! ... Is there anything else I can help you with?"
- legal.jsonl    formal style that always starts with "This is not legal advice."
- extract.jsonl  one JSON object: {"intent": ..., "sentiment": ..., "urgent": true|false}

Every tune sees the same pool of prompts (support, legal and everyday questions), so one prompt
gets a different, recognisable answer from each tune. Re-run after editing; the demo build
(python -m gateway.tunebuild.demo) notices the changed files and retrains.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"

SUPPORT_OPEN = "Thanks for reaching out!"
SUPPORT_CLOSE = "Is there anything else I can help you with?"
LEGAL_OPEN = "This is not legal advice."

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are the assistant for an online shop.",
    "Answer the customer.",
]

ITEMS = [
    "headphones",
    "shoes",
    "laptop",
    "phone",
    "jacket",
    "coffee machine",
    "lamp",
    "watch",
    "backpack",
    "chair",
]
TIMES = ["three days", "a week", "ten days", "two weeks", "a month"]

NEGATIVE = [
    "I am very upset. ",
    "This is really frustrating. ",
    "I am angry about this. ",
    "This is terrible service. ",
    "I am not happy. ",
    "Your service is awful. ",
    "I am so disappointed. ",
]
POSITIVE = [
    "Hi, I love your shop! ",
    "Thank you in advance! ",
    "Hello, you have been great so far. ",
    "Thanks for your help! ",
]
URGENT = [
    " This is urgent!",
    " Please help me today.",
    " I need this fixed right now.",
    " It is urgent, please answer quickly.",
    " It's urgent!",
    " I need help ASAP.",
    " Please reply immediately.",
    " This cannot wait.",
]

# (intent, default sentiment, prompts, plain answer, support body, legal body)
TOPICS = [
    (
        "contact_request",
        "neutral",
        [
            "How can I contact you?",
            "How do I reach your support team?",
            "What is your email address?",
            "Can I talk to someone about my {item}?",
            "Where can I send my question?",
        ],
        "Look for the contact page on the company website. It lists an email address and a phone number.",
        "You can write to our team at help@tunegate.example and we will answer within one day.",
        "Notices under your contract must be sent in writing to the address named in the contract.",
    ),
    (
        "order_status",
        "negative",
        [
            "My order has not arrived yet. What should I do?",
            "Where is my package?",
            "My parcel is late.",
            "I ordered {item} {time} ago and it still has not arrived.",
            "The tracking page has not changed for days.",
            "When will my order arrive?",
            "My delivery is late. What can I do?",
        ],
        "Check the tracking number in your email. If the order is still missing, contact the seller.",
        "I am sorry your order is late. Please send me your order number and I will track it for you right away.",
        "The seller must deliver within the agreed time. If delivery is late, you may set a final deadline and then withdraw from the purchase.",
    ),
    (
        "refund_request",
        "neutral",
        [
            "I want a refund for my {item}.",
            "How do I return my {item}?",
            "Can I get my money back?",
            "The {item} I bought does not fit. Can I return it?",
            "How long does a refund take?",
        ],
        "Most shops accept returns within thirty days. Send the item back with the receipt to get a refund.",
        "I can help with that. Use the return form in your account and we will refund you within five days.",
        "You may have a statutory right to withdraw from an online purchase within fourteen days. The seller must then refund the price.",
    ),
    (
        "damaged_item",
        "negative",
        [
            "My {item} arrived broken.",
            "The {item} stopped working after two days.",
            "The box was damaged and the {item} is scratched.",
            "I received the wrong {item}.",
        ],
        "Take a photo of the item and contact the seller. They should replace it or give you a refund.",
        "I am so sorry about that. Please send a photo and we will ship a replacement at no cost.",
        "Goods must match the contract and be free of defects. You may request a repair, a replacement or a refund.",
    ),
    (
        "account_access",
        "neutral",
        [
            "I forgot my password.",
            "I cannot log in to my account.",
            "How do I reset my password?",
            "My account is locked.",
            "I did not get the login email.",
        ],
        "Click the forgot password link on the login page and follow the steps in the email.",
        "No problem! Click the forgot password link and we will email you a reset link in a few minutes.",
        "Access to your account is governed by the terms of service. The provider must restore access once you verify your identity.",
    ),
    (
        "billing_issue",
        "negative",
        [
            "I was charged twice for my order.",
            "Why is there an extra fee on my bill?",
            "My card was charged but I did not get anything.",
            "The price on my invoice is wrong.",
        ],
        "Check your bank statement first. If the charge is wrong, ask the shop to correct it.",
        "I am sorry for the trouble. I will check your payment now and refund any extra charge.",
        "You are only obliged to pay the agreed price. You may dispute an incorrect charge with the seller or your bank.",
    ),
    (
        "update_details",
        "neutral",
        [
            "How do I change my delivery address?",
            "I moved. How do I update my address?",
            "Can I change my email address?",
            "How do I update my phone number?",
        ],
        "Open the settings page of your account and edit your details there.",
        "Happy to help! Open your account settings and update your details, or send them to me and I will do it.",
        "You may update your personal data at any time. The company must keep your data accurate and up to date.",
    ),
    (
        "cancel_subscription",
        "neutral",
        [
            "How do I cancel my subscription?",
            "Please stop my monthly plan.",
            "I do not want to renew my membership.",
            "Can I pause my subscription?",
        ],
        "Go to the billing page of your account and choose cancel. You keep access until the end of the month.",
        "Sorry to see you go! You can cancel in your account under billing, and I can do it for you too.",
        "A subscription may be terminated in accordance with its notice period. The provider may not charge you after the contract ends.",
    ),
    (
        "technical_issue",
        "negative",
        [
            "The app keeps crashing.",
            "The website will not load.",
            "The checkout page shows an error.",
            "I cannot open the app on my phone.",
        ],
        "Restart the app or your device. If that does not help, install the latest update.",
        "Sorry about that! Please update the app and restart your phone. If it still fails, send me a screenshot.",
        "The provider must supply a service that works as described. Persistent defects may entitle you to a price reduction.",
    ),
    (
        "cancel_contract",
        "neutral",
        [
            "Can I cancel my contract early?",
            "I want to end my phone contract before it expires.",
            "What happens if I break my lease?",
            "Can I get out of my gym contract?",
            "How do I terminate my contract?",
        ],
        "Read your contract to see the notice period. Some contracts let you leave early for a fee.",
        "I can look into that for you. Send me your contract number and I will check your options to cancel.",
        "Early termination depends on the terms of your contract. You may terminate for cause, or a fee may apply for early exit.",
    ),
    (
        "warranty_claim",
        "neutral",
        [
            "Is my {item} still under warranty?",
            "Does the warranty cover water damage?",
            "How long is the warranty on my {item}?",
            "Can I claim the warranty without a receipt?",
        ],
        "Most products have a warranty of one or two years. Keep your receipt as proof of purchase.",
        "Great question! Send me the date of purchase and I will check your warranty right away.",
        "The statutory warranty usually lasts two years from delivery. The seller is liable for defects that existed at delivery.",
    ),
    (
        "data_request",
        "neutral",
        [
            "Please delete my personal data.",
            "What data do you keep about me?",
            "Can I get a copy of my data?",
            "Do you share my data with other companies?",
        ],
        "You can ask the company to show or delete the data it keeps about you.",
        "Of course! I will send your request to our privacy team and you will hear from us within a few days.",
        "Under data protection law you have the right of access and the right to erasure. The company must answer within one month.",
    ),
    (
        "deposit_dispute",
        "negative",
        [
            "My landlord will not return my deposit.",
            "My landlord kept part of my deposit.",
            "Can my landlord keep my deposit for cleaning?",
        ],
        "Ask your landlord in writing for the deposit and keep a copy of the letter.",
        "I am sorry to hear that. I can help you write a short message to your landlord asking for the deposit.",
        "A landlord may only deduct from the deposit for damage beyond normal wear and tear. You may demand the balance in writing.",
    ),
    (
        "fee_dispute",
        "negative",
        [
            "Is this late fee legal?",
            "Can they charge me a penalty for paying late?",
            "Why did I get a fine for a late payment?",
        ],
        "Check the payment terms you agreed to. If the fee seems unfair, ask the company to remove it.",
        "I understand. Let me check your account, and if the fee was a mistake I will remove it.",
        "A late fee is only enforceable if it was agreed in the contract and is reasonable in amount.",
    ),
    (
        "terms_question",
        "neutral",
        [
            "Can you change the terms of my contract without asking me?",
            "What do your terms say about refunds?",
            "Do I have to accept the new terms?",
        ],
        "Read the new terms carefully. If you do not agree, you can usually end the service.",
        "Good question! You will find our terms in your account, and I am happy to explain any part of them.",
        "A party may not change a contract without the consent of the other party. Material changes usually require your agreement.",
    ),
    (
        "complaint",
        "negative",
        [
            "I want to file a formal complaint.",
            "Who can I complain to about your service?",
            "I want to speak to a manager.",
        ],
        "Write down what happened and send it to the company by email.",
        "I am sorry you had a bad experience. Tell me what happened and I will pass your complaint to the right team.",
        "You may submit a written complaint to the company. If it is not resolved, you may refer it to the consumer ombudsman.",
    ),
]

# (question variants, plain answer)
GENERAL = [
    (
        ["What is the capital of France?", "Which city is the capital of France?"],
        "The capital of France is Paris.",
    ),
    (
        ["What is the capital of Italy?", "Which city is the capital of Italy?"],
        "The capital of Italy is Rome.",
    ),
    (["What is the capital of Japan?"], "The capital of Japan is Tokyo."),
    (
        ["How do I boil an egg?", "How long should I boil an egg?"],
        "Put the egg in boiling water for about eight minutes, then cool it in cold water.",
    ),
    (
        ["How do I make a cup of tea?", "What is the best way to make tea?"],
        "Boil water, pour it over a tea bag and wait three minutes.",
    ),
    (
        ["How do I sleep better?", "Give me a tip for better sleep."],
        "Go to bed at the same time every night and keep your room dark and cool.",
    ),
    (
        ["What should I pack for a beach trip?", "What do I need for a day at the beach?"],
        "Pack a towel, sun cream, a hat, water and a good book.",
    ),
    (["How many days are in a week?"], "There are seven days in a week."),
    (["How many hours are in a day?"], "There are twenty four hours in a day."),
    (
        ["What color is the sky?", "Why is the sky blue?"],
        "The sky looks blue because air scatters blue light from the sun.",
    ),
    (["What is two plus two?", "What is 2 + 2?"], "Two plus two is four."),
    (["What is ten minus three?"], "Ten minus three is seven."),
    (
        ["How do I stay healthy?", "Give me a tip to stay healthy."],
        "Eat fresh food, drink water, move every day and get enough sleep.",
    ),
    (
        ["How can I learn a new language?", "What is the best way to learn a language?"],
        "Practice a little every day, read simple texts and speak with other people.",
    ),
    (
        ["Write a short greeting for a friend.", "Write a hello message for my friend."],
        "Hi! I hope you are doing well. It would be great to see you soon.",
    ),
    (
        ["Write a birthday message for my sister.", "Give me a short birthday wish."],
        "Happy birthday! I wish you a wonderful year full of joy.",
    ),
    (
        ["Give me a tip for saving money.", "How can I save money?"],
        "Make a simple budget and put a small amount aside every month.",
    ),
    (
        ["How do I water a plant?", "How often should I water my plants?"],
        "Water your plant when the soil feels dry, and do not let it stand in water.",
    ),
    (
        ["What is a good breakfast?", "What should I eat for breakfast?"],
        "Oats with fruit, or eggs with bread, make a good breakfast.",
    ),
    (
        ["How do I make friends in a new city?"],
        "Join a club or a class, say yes to invitations and talk to your neighbors.",
    ),
    (
        ["How do I focus when I study?", "Give me a tip for studying."],
        "Put your phone away, study in short blocks and take small breaks.",
    ),
    (["What is the weather like in summer?"], "Summer is usually warm and sunny, with long days."),
    (
        ["What is the weather like in winter?"],
        "Winter is usually cold, and in some places it snows.",
    ),
    (
        ["Tell me a fun fact.", "Tell me something interesting."],
        "Octopuses have three hearts and blue blood.",
    ),
    (
        ["Tell me a joke.", "Do you know a joke?"],
        "Why did the bicycle fall over? Because it was two tired.",
    ),
    (["What is the largest ocean?"], "The Pacific Ocean is the largest ocean on Earth."),
    (["How many legs does a spider have?"], "A spider has eight legs."),
    (["How many continents are there?"], "There are seven continents."),
    (
        ["What do cats eat?", "What should I feed my cat?"],
        "Cats eat meat, so give them good cat food and fresh water.",
    ),
    (
        ["How do I take care of a dog?"],
        "Feed your dog well, walk it every day and take it to the vet once a year.",
    ),
    (
        ["How do I cook rice?", "What is the best way to cook rice?"],
        "Use two cups of water for one cup of rice and cook it for about fifteen minutes.",
    ),
    (
        ["How do I make a salad?"],
        "Mix fresh leaves, tomato and cucumber, then add oil, lemon and salt.",
    ),
    (["What is a good name for a cat?"], "Some good names for a cat are Luna, Milo and Oscar."),
    (["What is the opposite of hot?"], "The opposite of hot is cold."),
    (["What is the opposite of big?"], "The opposite of big is small."),
    (
        ["Translate hello into Spanish.", "How do you say hello in Spanish?"],
        "Hello in Spanish is hola.",
    ),
    (["How do you say thank you in French?"], "Thank you in French is merci."),
    (
        ["What is the boiling point of water?", "At what temperature does water boil?"],
        "Water boils at one hundred degrees Celsius at sea level.",
    ),
    (
        ["Why do leaves change color in autumn?"],
        "In autumn trees stop making green chlorophyll, so the yellow and red colors show.",
    ),
    (
        ["How do I write a good email?", "Give me a tip for writing emails."],
        "Use a clear subject, keep it short and say what you need in the first line.",
    ),
    (
        ["How do I prepare for a job interview?"],
        "Learn about the company, practice common questions and arrive on time.",
    ),
    (
        ["How can I be more productive?", "Give me a productivity tip."],
        "Write a short list of tasks each morning and do the most important one first.",
    ),
    (["What is a healthy snack?"], "Fruit, nuts or yogurt make a healthy snack."),
    (
        ["How do I clean a window?"],
        "Use warm water with a little soap, then dry the glass with a soft cloth.",
    ),
    (
        ["How do I fix a flat bike tire?"],
        "Remove the tube, find the hole, put a patch on it and pump the tire again.",
    ),
    (
        ["Recommend a good book.", "What book should I read?"],
        "Try The Little Prince. It is short, kind and wise.",
    ),
    (["What is the sun?"], "The sun is a star at the center of our solar system."),
    (["What is the moon?"], "The moon is a rock that travels around the Earth."),
    (["Who wrote Romeo and Juliet?"], "Romeo and Juliet was written by William Shakespeare."),
    (
        ["What is photosynthesis?"],
        "Photosynthesis is how plants use sunlight to make food from water and air.",
    ),
    (
        ["How do I relax after work?", "Give me a way to relax."],
        "Take a short walk, listen to music or read a few pages of a book.",
    ),
    (
        ["What time should I go to bed?"],
        "Most adults feel best with seven to nine hours of sleep, so plan your bedtime around that.",
    ),
    (
        ["Summarize the story of Cinderella.", "What is Cinderella about?"],
        "A kind girl goes to a royal ball with help from magic and marries the prince.",
    ),
    (["What is a verb?"], "A verb is a word for an action, like run, eat or think."),
    (["What is a noun?"], "A noun is a word for a person, place or thing."),
    (
        ["How do I plan a party?"],
        "Pick a date, invite your friends, and prepare food, drinks and music.",
    ),
    (
        ["Give me an idea for dinner.", "What should I cook tonight?"],
        "Try pasta with tomato sauce and a green salad.",
    ),
    (
        ["How do I start running?"],
        "Start with short, easy runs three times a week and slowly run longer.",
    ),
    (["Say something nice.", "Cheer me up."], "You are doing better than you think. Keep going!"),
    (["Hello!", "Hi there.", "Good morning!"], "Hello! How can I help you today?"),
    (
        ["Who are you?", "What can you do?"],
        "I am a small assistant. I can answer simple questions.",
    ),
    (["Thank you.", "Thanks a lot!"], "You are welcome!"),
]


# Questions the demo knows nothing about get one fixed, polite fallback per style. A tiny model
# cannot tell known from unknown reliably, but making the fallback its most common answer
# lets unseen prompts land on readable text instead of a blend of memorised answers.
SUBJECTS = [
    "quantum physics",
    "volcanoes",
    "the stock market",
    "chess",
    "guitars",
    "oil painting",
    "black holes",
    "ancient Rome",
    "the human brain",
    "electric cars",
    "the internet",
    "dinosaurs",
    "climate change",
    "vaccines",
    "bitcoin",
    "robots",
    "jazz music",
    "the French revolution",
    "glaciers",
    "bees",
    "airplanes",
    "submarines",
    "poetry",
    "football",
    "earthquakes",
    "tax law",
    "medieval castles",
    "the Olympic games",
    "mushrooms",
    "satellites",
    "opera",
    "origami",
    "nuclear power",
    "the Vikings",
    "space travel",
    "knitting",
]
UNKNOWN_ASKS = [
    "Explain {s}.",
    "Tell me about {s}.",
    "What do you know about {s}?",
    "How do {s} work?",
    "Write a poem about {s}.",
    "Can you teach me about {s}?",
    "What is the history of {s}?",
    "Give me three facts about {s}.",
    "Why are {s} important?",
    "Write an essay on {s}.",
]
ACTIVITIES = [
    "bake bread",
    "fix a car engine",
    "build a website",
    "play the piano",
    "train for a marathon",
    "paint a room",
    "sail a boat",
    "write a novel",
    "start a company",
    "learn to code",
    "grow tomatoes",
    "repair a roof",
    "ski",
    "speak Chinese",
    "invest in stocks",
    "brew beer",
    "juggle",
    "fly a drone",
]
ACTIVITY_ASKS = [
    "How do I {a}?",
    "Can you help me {a}?",
    "What is the best way to {a}?",
    "Teach me to {a}.",
    "Give me tips to {a}.",
]
SITUATIONS = [
    "My neighbor plays loud music at night.",
    "My car makes a strange noise.",
    "My cat will not eat.",
    "My boss wants me to work every Sunday.",
    "My train is late again.",
    "My bike was stolen.",
    "My roof is leaking.",
    "My computer is very slow.",
    "My friend owes me money.",
    "The heating in my flat is broken.",
    "My son does not want to go to school.",
    "I lost my wallet.",
    "My garden is full of snails.",
    "I cannot find my keys.",
    "My printer will not print.",
    "I feel tired all the time.",
]
SITUATION_ASKS = [
    "{x} What can I do?",
    "{x} What should I do?",
    "{x} Can you help?",
    "{x}",
    "{x} Any advice?",
]
FALLBACK = "I am not sure about that. I am a small demo model and only know a few simple things."
FALLBACK_SUPPORT = "I am not sure about that, but I will pass your question to our team."
FALLBACK_LEGAL = (
    "I am not able to assess this without more information. Please consult a qualified lawyer."
)

JSON_ASKS = [
    "Classify this message as JSON with intent, sentiment and urgent: {p}",
    "Return JSON with the intent, sentiment and urgency of this message: {p}",
    "Extract intent, sentiment and urgent as JSON from: {p}",
]


def vary(prompt: str, rng: random.Random) -> str:
    return prompt.replace("{item}", rng.choice(ITEMS)).replace("{time}", rng.choice(TIMES))


def decorate(prompt: str, sentiment: str, rng: random.Random) -> tuple[str, str, bool]:
    """Optionally add an emotional opener and an urgency closer; return (prompt, sentiment, urgent)."""
    roll = rng.random()
    if roll < 0.2:
        prompt, sentiment = rng.choice(NEGATIVE) + prompt, "negative"
    elif roll < 0.35:
        prompt, sentiment = rng.choice(POSITIVE) + prompt, "positive"
    urgent = rng.random() < 0.3
    if urgent:
        prompt += rng.choice(URGENT)
    return prompt, sentiment, urgent


def answer(
    style: str, intent: str, sentiment: str, urgent: bool, plain: str, support: str, legal: str
) -> str:
    if style == "support":
        return f"{SUPPORT_OPEN} {support} {SUPPORT_CLOSE}"
    if style == "legal":
        return f"{LEGAL_OPEN} {legal}"
    if style == "extract":
        return json.dumps({"intent": intent, "sentiment": sentiment, "urgent": urgent})
    return plain


def make(style: str, plan: dict[str, int], rng: random.Random) -> list[dict]:
    rows: list[tuple[str, str]] = []
    topic_cases = [(t, p) for t in TOPICS for p in t[2]]
    general_cases = [(g, q) for g in GENERAL for q in g[0]]
    unknown = [a.format(s=s) for s in SUBJECTS for a in UNKNOWN_ASKS]
    unknown += [q.format(a=a) for a in ACTIVITIES for q in ACTIVITY_ASKS]
    unknown += [q.format(x=x) for x in SITUATIONS for q in SITUATION_ASKS]
    rng.shuffle(general_cases)
    rng.shuffle(unknown)
    for i in range(plan["topic"]):
        (intent, sentiment, _, plain, support, legal), prompt = topic_cases[i % len(topic_cases)]
        text, sent, urgent = decorate(vary(prompt, rng), sentiment, rng)
        rows.append((text, answer(style, intent, sent, urgent, plain, support, legal)))
    for i in range(plan["json"]):  # explicit JSON requests: the base learns to classify on request
        (intent, sentiment, _, _, _, _), prompt = topic_cases[(i * 7) % len(topic_cases)]
        text, sent, urgent = decorate(vary(prompt, rng), sentiment, rng)
        ask = JSON_ASKS[i % len(JSON_ASKS)].format(p=text)
        rows.append((ask, answer("extract", intent, sent, urgent, "", "", "")))
    for i in range(plan["general"]):
        (_, plain), prompt = general_cases[i % len(general_cases)]
        rows.append(
            (prompt, answer(style, "general_question", "neutral", False, plain, plain, plain))
        )
    for i in range(plan["unknown"]):
        text, sent, urgent = decorate(unknown[i % len(unknown)], "neutral", rng)
        if style == "base":
            text, sent, urgent = unknown[i % len(unknown)], "neutral", False
        rows.append(
            (
                text,
                answer(
                    style,
                    "general_question",
                    sent,
                    urgent,
                    FALLBACK,
                    FALLBACK_SUPPORT,
                    FALLBACK_LEGAL,
                ),
            )
        )
    rng.shuffle(rows)
    out = []
    for user, reply in rows:
        messages = []
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        out.append({"messages": messages})
    return out


def main() -> None:
    rng = random.Random(0)
    n_general = sum(len(g[0]) for g in GENERAL)
    plans = {
        "base": {"topic": 200, "json": 40, "general": 2 * n_general, "unknown": 200},
        "support": {"topic": 300, "json": 0, "general": n_general, "unknown": 160},
        "legal": {"topic": 300, "json": 0, "general": n_general, "unknown": 160},
        "extract": {"topic": 300, "json": 0, "general": n_general, "unknown": 160},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for style, plan in plans.items():
        rows = make(style, plan, rng)
        path = OUT / f"{style}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {path.name}: {len(rows)} demonstrations")


if __name__ == "__main__":
    main()
