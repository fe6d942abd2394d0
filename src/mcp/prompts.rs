//! Prompts: ready-made requests for the calls people ask for most, each ending with how to
//! follow the call to its outcome.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::*;
use rmcp::{prompt, prompt_router};

use super::handler::TelephonyServer;
use super::types::*;

#[prompt_router(vis = "pub(super)")]
impl TelephonyServer {
    /// Book a table at a restaurant by phone.
    #[prompt(name = "make-restaurant-reservation")]
    async fn make_restaurant_reservation(
        &self,
        Parameters(a): Parameters<ReservationArgs>,
    ) -> Vec<PromptMessage> {
        let name = a
            .name
            .map(|n| format!(" under the name {n}"))
            .unwrap_or_default();
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call the restaurant at {num} with the telephony_call tool and book a table for {people} people on {date} at {time}{name}. \
                 Put the party size, date, time and name in `context`; the goal is a confirmed reservation, accepting a time within 30 minutes if the requested one is full. \
                 Then call telephony_wait with the returned callId, again as long as it says ended: false, and tell me whether the booking was confirmed, \
                 for when, and anything the restaurant asked for, quoting the outcome summary.",
                num = a.restaurant_number,
                people = a.people_number,
                date = a.date,
                time = a.time,
            ),
        )]
    }

    /// Move an existing appointment to another time by phone.
    #[prompt(name = "reschedule-appointment")]
    async fn reschedule_appointment(
        &self,
        Parameters(a): Parameters<RescheduleArgs>,
    ) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call {num} with telephony_call to reschedule the appointment for {name} currently booked as: {cur}. \
                 Preferred new times: {pref}. Goal: agree a new slot within those preferences and get it confirmed; do not cancel without a new slot. \
                 Then follow it with telephony_wait until it has ended and tell me the new appointment time or why it could not be moved.",
                num = a.phone_number,
                name = a.name,
                cur = a.current_appointment,
                pref = a.preferred_times,
            ),
        )]
    }

    /// Phone someone to deliver a short message (e.g. "tell them I'm 15 minutes late").
    #[prompt(name = "deliver-message")]
    async fn deliver_message(&self, Parameters(a): Parameters<MessageArgs>) -> Vec<PromptMessage> {
        let from = a
            .from_name
            .map(|n| format!(" on behalf of {n}"))
            .unwrap_or_default();
        let to = a.recipient.map(|r| format!(" for {r}")).unwrap_or_default();
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call {num} with telephony_call{from} and deliver this message{to}: \"{msg}\". \
                 The goal is that they acknowledge it; answer simple questions only from what the message says. \
                 Then use telephony_wait until the call has ended and tell me how they responded.",
                num = a.phone_number,
                msg = a.message,
            ),
        )]
    }
}
