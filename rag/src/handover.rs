//! Catching "I want a human" before retrieval (SPEC §11): a rule, not a
//! model, so it works the same in every deployment and is easy to extend.

/// Phrases (lowercase, `ё` written `е`) that ask for a person. Each must
/// be specific enough not to fire on ordinary support questions ("how do
/// I add a user to my account" must not match).
const PHRASES: &[&str] = &[
    // Russian
    "оператор",
    "живой человек",
    "живого человека",
    "живым человеком",
    "с человеком",
    "позовите человека",
    "позовите менеджера",
    "соедините с",
    "переключите на",
    "нужна помощь человека",
    "хочу поговорить с",
    "свяжите меня с",
    "специалист поддержки",
    "сотрудник поддержки",
    "не бот",
    // English ("human" alone would catch "human resources")
    "a human",
    "human agent",
    "human operator",
    "human support",
    "real person",
    "live person",
    "live agent",
    "talk to a person",
    "speak to a person",
    "talk to someone",
    "speak to someone",
    "talk to an agent",
    "speak to an agent",
    "speak with an agent",
    "customer service representative",
    "representative",
    "operator",
    "not a bot",
];

/// Whether the message asks to be handed to a person.
pub fn asks_for_human(message: &str) -> bool {
    let normalized: String = message
        .to_lowercase()
        .replace('ё', "е")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    PHRASES.iter().any(|p| normalized.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_a_person_in_both_languages() {
        for text in [
            "Это не совсем то, что мне нужно. Нужна помощь оператора.",
            "Соедините с живым человеком, пожалуйста",
            "Позовите человека!",
            "I want to talk to a human",
            "Can I speak to a real person?",
            "Please connect me with a live agent",
            "REPRESENTATIVE",
        ] {
            assert!(asks_for_human(text), "{text}");
        }
    }

    #[test]
    fn ordinary_questions_do_not_match() {
        for text in [
            "Как вернуть товар?",
            "How do I reset my password?",
            "How do I add a user to my account?",
            "Как работает документирование?",
            "What is the rate limit for the API?",
            "Who do I contact in human resources?",
        ] {
            assert!(!asks_for_human(text), "{text}");
        }
    }
}
