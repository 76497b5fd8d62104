package simulate

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Channel types of an inbox, as Chatwoot names the channel classes
// (inboxes.channel_type, conversation.channel in payloads).
const (
	ChannelAPI       = "Channel::Api"
	ChannelWebWidget = "Channel::WebWidget"
	ChannelWhatsapp  = "Channel::Whatsapp"
	ChannelTelegram  = "Channel::Telegram"
	ChannelFacebook  = "Channel::FacebookPage"
	ChannelInstagram = "Channel::Instagram"
	ChannelSMS       = "Channel::Sms"       // Bandwidth
	ChannelTwilio    = "Channel::TwilioSms" // the SMS medium
	ChannelEmail     = "Channel::Email"
	ChannelLine      = "Channel::Line"
	ChannelTwitter   = "Channel::TwitterProfile"
	ChannelTiktok    = "Channel::Tiktok"
)

// channelTraits is what the fake needs to know about a channel class.
type channelTraits struct {
	// external channels send outgoing messages through a subclass of
	// Base::SendOnChannelService, which skips any message whose source_id
	// is present (app/services/base/send_on_channel_service.rb,
	// #invalid_message?). Api and WebWidget are mapped to
	// Messages::SendEmailNotificationService instead
	// (app/jobs/send_reply_job.rb, CHANNEL_SERVICES), so the customer sees
	// their messages whatever the source_id.
	external bool
	// window is how long after the customer's last message an agent may
	// still reply (Conversations::MessageWindowService); 0 = no window.
	window time.Duration
	// windowError is the external_error a send outside the window fails
	// with; "" = the send goes out anyway.
	windowError string
	// sentID makes the provider id that the send service writes into
	// source_id after a successful send; nil = source_id is left alone.
	sentID func() string
	// sentStatus is the status the send service sets ("" = stays "sent").
	sentStatus string
	// inID makes the source_id of a message that arrives from the channel.
	inID func() string
	// phone and email: the contact_inbox.source_id is the contact's phone
	// number (whatsapp: without "+") or email (app/builders/contact_inbox_builder.rb).
	phone, email bool
}

// whatsappWindowError is what Whatsapp::SendOnWhatsappService writes when it
// falls back to a template outside the 24 h window and none was given
// (app/services/whatsapp/send_on_whatsapp_service.rb#send_template_message).
const whatsappWindowError = "Template not found or invalid template name"

// metaWindowError is the Graph API refusal of a Messenger or Instagram
// message outside the messaging window, as Chatwoot stores it:
// "#{error_code} - #{error_message}" (#external_error in
// app/services/facebook/send_on_facebook_service.rb and
// app/services/instagram/base_send_service.rb).
const metaWindowError = "10 - (#10) This message is sent outside of allowed window."

// channels lists the channel classes the fake knows. Unknown classes have no
// send service in SendReplyJob, so their customers receive nothing.
var channels = map[string]channelTraits{
	ChannelAPI:       {},
	ChannelWebWidget: {},
	// Each sender below ends with message.update!(source_id: <provider id>),
	// which fires message_updated: whatsapp/send_on_whatsapp_service.rb,
	// telegram/send_on_telegram_service.rb, facebook/send_on_facebook_service.rb,
	// instagram/base_send_service.rb, sms/send_on_sms_service.rb,
	// twilio/send_on_twilio_service.rb, email/send_on_email_service.rb,
	// tiktok/send_on_tiktok_service.rb (all under app/services/).
	ChannelWhatsapp: {external: true, window: 24 * time.Hour, windowError: whatsappWindowError,
		sentID: wamid, inID: wamid, phone: true},
	ChannelTelegram:  {external: true, sentID: numericID, inID: numericID},
	ChannelFacebook:  {external: true, window: 24 * time.Hour, windowError: metaWindowError, sentID: messengerMID, inID: messengerMID},
	ChannelInstagram: {external: true, window: 24 * time.Hour, windowError: metaWindowError, sentID: instagramMID, inID: instagramMID},
	ChannelSMS:       {external: true, sentID: bandwidthID, inID: bandwidthID, phone: true},
	ChannelTwilio:    {external: true, sentID: twilioSID, inID: twilioSID, phone: true},
	ChannelEmail:     {external: true, sentID: mailMessageID, inID: mailMessageID, email: true},
	// Line::SendOnLineService only sets status delivered (no source_id);
	// that update still fires message_updated.
	ChannelLine: {external: true, sentStatus: "delivered", inID: numericID},
	// Twitter direct messages: SendOnTwitterService#send_direct_message
	// changes nothing on the message, so no message_updated follows.
	ChannelTwitter: {external: true, inID: numericID},
	// Tiktok has a 48 h can_reply window; what its API says outside it is
	// not known here, so sends still go out.
	ChannelTiktok: {external: true, window: 48 * time.Hour, sentID: numericID, sentStatus: "delivered", inID: numericID},
}

func traitsOf(channel string) (channelTraits, bool) {
	t, ok := channels[channel]
	return t, ok
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return b
}

func randDigits(n int) string {
	b := randBytes(n)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	if b[0] == '0' {
		b[0] = '1'
	}
	return string(b)
}

func randHex(n int) string {
	const digits = "0123456789abcdef"
	b := randBytes(n)
	for i := range b {
		b[i] = digits[b[i]%16]
	}
	return string(b)
}

// Provider message ids, shaped like the real ones (e.g. the WhatsApp Cloud
// "wamid.HBgN..." in the corpus capture).
func wamid() string        { return "wamid." + base64.StdEncoding.EncodeToString(randBytes(42)) }
func numericID() string    { return randDigits(10) }
func messengerMID() string { return "m_" + base64.RawURLEncoding.EncodeToString(randBytes(60)) }
func instagramMID() string {
	return base64.StdEncoding.EncodeToString([]byte("ig_message_item:1:IGMessageThread:" + randDigits(17) + ":" + randDigits(20)))
}
func bandwidthID() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) + randHex(14) }
func twilioSID() string   { return "SM" + randHex(32) }
func mailMessageID() string {
	return "conversation/" + newUUID() + "/messages/" + randDigits(6) + "@reply.example.com"
}

// contactSourceID is contact_inbox.source_id for a new contact in a channel
// (app/builders/contact_inbox_builder.rb for Api, WebWidget, Whatsapp,
// TwilioSms, Sms and Email; the channels' incoming services for the rest,
// which take the sender's id on the platform).
func contactSourceID(channel string, ct *cwContact) string {
	switch channel {
	case ChannelWhatsapp:
		return strings.TrimPrefix(ct.Phone, "+") // "whatsapp doesn't want the + in e164 format"
	case ChannelTwilio, ChannelSMS:
		return ct.Phone
	case ChannelEmail:
		return ct.Email
	case ChannelTelegram, ChannelTwitter:
		return randDigits(10)
	case ChannelFacebook:
		return randDigits(16) // page-scoped id
	case ChannelInstagram:
		return randDigits(17) // Instagram-scoped id
	case ChannelLine:
		return "U" + randHex(32)
	case ChannelTiktok:
		return randDigits(19)
	}
	return newUUID()
}

// conversationAttrs is the conversation's additional_attributes as each
// channel's builder sets them when it starts a conversation.
func conversationAttrs(channel, sourceID string, ct *cwContact, now time.Time) obj {
	switch channel {
	case ChannelWebWidget:
		// app/controllers/api/v1/widget/base_controller.rb#conversation_params;
		// initiated_at is the browser's Date string.
		return obj{
			{"browser_language", "en"},
			{"browser", obj{{"browser_name", "Chrome"}, {"browser_version", "142.0.0.0"}, {"device_name", "Unknown"},
				{"platform_name", "macOS"}, {"platform_version", "10.15.7"}}},
			{"initiated_at", obj{{"timestamp", now.UTC().Format("Mon Jan 02 2006 15:04:05 GMT+0000 (Coordinated Universal Time)")}}},
			{"referer", "https://shop.example.com/"},
		}
	case ChannelEmail:
		// app/mailboxes/imap/imap_mailbox.rb#find_or_create_conversation
		return obj{{"source", "email"}, {"in_reply_to", nil}, {"auto_reply", false},
			{"mail_subject", "Question from " + ct.Name}, {"initiated_at", obj{{"timestamp", isoTime(now)}}}}
	case ChannelTelegram:
		// app/services/telegram/incoming_message_service.rb#conversation_additional_attributes;
		// in a private chat the chat id is the user's id.
		id, _ := strconv.ParseInt(sourceID, 10, 64)
		return obj{{"chat_id", id}, {"business_connection_id", nil}}
	case ChannelTwitter:
		// app/services/twitter/direct_message_parser_service.rb
		return obj{{"type", "direct_message"}}
	case ChannelTwilio:
		// app/services/twilio/incoming_message_service.rb#additional_attributes (sms medium)
		return obj{{"from_zip_code", nil}, {"from_country", "US"}, {"from_state", nil}}
	case ChannelLine:
		// app/services/line/incoming_message_service.rb#additional_attributes
		return obj{{"social_line_user_id", sourceID}}
	}
	return obj{}
}
